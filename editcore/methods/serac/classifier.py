"""SERAC's scope classifier: is a query about a stored edit?

The paper's best classifier is a fine-tuned cross-encoder (distilBERT over the concatenated edit and query);
its cheaper variant embeds both with a dual encoder. Here the encoder stays frozen
(:mod:`editcore.encoders`, all-MiniLM-L6-v2 by default) and a small head is trained on the pair features
``[u, v, u*v, |u-v|]`` (``u`` the edit's embedding, ``v`` the query's; the InferSent/Sentence-BERT pair
features). Why: training takes CPU minutes, not GPU hours; an edit's embedding is computed once when it is
stored and a query costs one encoder pass whatever the memory holds (a cross-encoder costs one pass per
stored edit); and the head still learns more than a similarity threshold (the same relation about another
subject must score low). ``hidden=0`` makes the head a logistic regression.

Artefacts: ``$EDITSCOPE_HOME/trained/serac/<key>.safetensors`` (the head) and ``<key>.json`` (settings, data
digest, held-out precision/recall/F1, the loss curve), ``key`` = SHA-256 of the encoder's fingerprint, the
training settings and the training data; the sentence embeddings of the training data are kept beside them
(a resumed run does not encode again). ``current-<encoder>.json`` names the classifier trained last for an
encoder: the one SERAC uses.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ... import paths
from ...encoders import DEFAULT_ENCODER, ENCODERS, Encoder, get_encoder
from ...errors import InputError
from ..base import Progress, hparam
from .pairs import KINDS, SOURCES, Pairs, build_pairs

log = logging.getLogger(__name__)

ARTEFACT_VERSION = 1


@dataclass(frozen=True)
class SeracTrainHparams:
    encoder: str = hparam(DEFAULT_ENCODER, choices=ENCODERS, help="frozen sentence encoder under the head")
    sources: tuple[str, ...] = hparam(SOURCES, choices=SOURCES, help="where edit/query pairs come from")
    max_facts: int = hparam(1200, lo=1, hi=1_000_000, help="facts read from each source (its first ones)")
    neighbours: int = hparam(5, lo=0, hi=50, help="neighbourhood prompts per fact (out of scope)")
    unrelated: int = hparam(2, lo=0, hi=50, help="prompts of other facts per fact (out of scope)")
    heldout_fraction: float = hparam(0.2, lo=0.05, hi=0.5, help="facts held out for precision/recall")
    hidden: int = hparam(256, lo=0, hi=4096, help="hidden units of the head (0: logistic regression)")
    epochs: int = hparam(40, lo=1, hi=1000)
    batch_size: int = hparam(512, lo=8, hi=65536)
    lr: float = hparam(1e-3, lo=1e-6, hi=1.0)
    weight_decay: float = hparam(1e-4, lo=0.0, hi=1.0)
    seed: int = hparam(0, lo=0, hi=2**31 - 1)


class Head(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.net = nn.Linear(4 * dim, 1) if hidden == 0 else nn.Sequential(
            nn.Linear(4 * dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Logits of ``[n]`` (edit, query) pairs from their embeddings ``[n, d]``."""
        return self.net(torch.cat([u, v, u * v, (u - v).abs()], dim=-1))[:, 0]


def _folder():
    return paths.sub("trained", "serac")


def _digest(payload) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _pairs(thp: SeracTrainHparams) -> Pairs:
    return build_pairs(thp.sources, thp.max_facts, thp.neighbours, thp.unrelated, thp.heldout_fraction, thp.seed)


def artefact_key(encoder_fp: str, thp: SeracTrainHparams, pairs: Pairs) -> str:
    settings = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(thp).items()}
    return _digest({"method": "serac", "v": ARTEFACT_VERSION, "encoder": encoder_fp, "settings": settings,
                    "data": pairs.digest})


def _current_path(encoder_name: str):
    return _folder() / f"current-{encoder_name}.json"


def current_report(encoder_name: str = DEFAULT_ENCODER) -> dict | None:
    """The report of the classifier SERAC uses with this encoder (the last trained), or None."""
    try:
        key = json.loads(_current_path(encoder_name).read_text())["key"]
        return json.loads((_folder() / f"{key}.json").read_text())
    except (OSError, ValueError, KeyError):
        return None


def current_keys() -> dict[str, str]:
    """Encoder name -> key of its current classifier (part of SERAC's version: results follow a retraining)."""
    out = {}
    for name in ENCODERS:
        rep = current_report(name)
        if rep:
            out[name] = rep["key"]
    return out


class ScopeClassifier:
    """A trained head beside its encoder: ``probabilities(edits, query)`` for the edits of a memory."""

    def __init__(self, encoder: Encoder, head: Head, report: dict):
        self.encoder, self.head, self.report = encoder, head, report
        self._edit_emb: dict[str, torch.Tensor] = {}
        self._lock = threading.Lock()

    @torch.no_grad()
    def probabilities(self, edits: Sequence[str], query: str) -> torch.Tensor:
        with self._lock:
            missing = [e for e in dict.fromkeys(edits) if e not in self._edit_emb]
            if missing:
                self._edit_emb.update(zip(missing, self.encoder.encode(missing)))
            u = torch.stack([self._edit_emb[e] for e in edits])
        v = self.encoder.encode([query]).expand_as(u)
        return torch.sigmoid(self.head(u, v))


_LOADED: dict[tuple[str, str], ScopeClassifier] = {}
_LOAD_LOCK = threading.Lock()


def load_current(encoder_name: str, device=None) -> ScopeClassifier:
    """The current classifier for ``encoder_name`` (loaded once per process); InputError if none is trained."""
    rep = current_report(encoder_name)
    if rep is None:
        raise InputError(f"SERAC needs a trained scope classifier for the encoder {encoder_name}: run "
                         f"`python -m editcore train serac` (a few minutes on a CPU)")
    with _LOAD_LOCK:
        key = (rep["key"], str(device))
        if key not in _LOADED:
            from safetensors.torch import load_file

            encoder = get_encoder(encoder_name, device)
            head = Head(encoder.dim, rep["settings"]["hidden"])
            head.load_state_dict(load_file(str(_folder() / f"{rep['key']}.safetensors")))
            head.eval()
            _LOADED[key] = ScopeClassifier(encoder, head, rep)
        return _LOADED[key]


# ---- training -------------------------------------------------------------------------------------------
def _embeddings(encoder: Encoder, texts: Sequence[str], resume: bool, progress: Progress | None) -> torch.Tensor:
    from safetensors.torch import load_file, save_file

    path = _folder() / "embeddings" / f"{_digest({'encoder': encoder.fingerprint, 'texts': list(texts)})}.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    if resume and path.is_file():
        try:
            emb = load_file(str(path))["embeddings"]
            if emb.shape[0] == len(texts):
                return emb
        except Exception as exc:
            log.warning("re-encoding: unreadable embeddings %s (%s)", path, exc)
    parts = []
    for start in range(0, len(texts), 256):
        parts.append(encoder.encode(texts[start:start + 256]))
        if progress:
            progress(f"encoding {len(texts)} sentences", 0.6 * min(1.0, (start + 256) / len(texts)))
    emb = torch.cat(parts)
    tmp = path.with_suffix(".tmp")
    save_file({"embeddings": emb.contiguous()}, str(tmp))
    tmp.replace(path)
    return emb


def scores(tp: int, fp: int, fn: int) -> dict:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0}


@torch.no_grad()
def pair_scores(head: Head, emb: torch.Tensor, pairs: Pairs, mask: torch.Tensor, threshold: float = 0.5) -> dict:
    """Precision/recall/F1 over the pairs in ``mask`` at ``threshold``, and the rate of "in scope" per kind."""
    e, q = torch.tensor(pairs.edit)[mask], torch.tensor(pairs.query)[mask]
    y = torch.tensor(pairs.label)[mask].bool()
    pred = torch.sigmoid(head(emb[e], emb[q])) >= threshold
    out = scores(int((pred & y).sum()), int((pred & ~y).sum()), int((~pred & y).sum()))
    kinds = [k for k, m in zip(pairs.kind, mask.tolist()) if m]
    out["in_scope_rate"] = {k: float(pred[[i for i, kk in enumerate(kinds) if kk == k]].float().mean())
                            for k in KINDS if k in kinds}
    out["pairs"] = int(mask.sum())
    return out


def train(thp: SeracTrainHparams, device=None, progress: Progress | None = None, resume: bool = True) -> dict:
    """Train (or, with ``resume``, reuse) the classifier for ``thp`` and make it the current one."""
    from safetensors.torch import save_file

    t0 = time.perf_counter()
    encoder = get_encoder(thp.encoder, device)
    if progress:
        progress("building edit/query pairs", 0.0)
    pairs = _pairs(thp)
    key = artefact_key(encoder.fingerprint, thp, pairs)
    report_path = _folder() / f"{key}.json"
    if resume and report_path.is_file() and (_folder() / f"{key}.safetensors").is_file():
        report = json.loads(report_path.read_text())
        _current_path(thp.encoder).write_text(json.dumps({"key": key}))
        if progress:
            progress("already trained", 1.0)
        return report
    emb = _embeddings(encoder, pairs.texts, resume, progress)
    t_enc = time.perf_counter() - t0
    held = torch.tensor(pairs.heldout)
    train_idx = torch.nonzero(~held)[:, 0]
    e_all, q_all = torch.tensor(pairs.edit), torch.tensor(pairs.query)
    y_all = torch.tensor(pairs.label, dtype=torch.float32)
    n_pos = float(y_all[train_idx].sum())
    pos_weight = torch.tensor((len(train_idx) - n_pos) / max(n_pos, 1.0))
    devices = [torch.device(device)] if device is not None and torch.device(device).type == "cuda" else []
    curve = []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(thp.seed)
        head = Head(encoder.dim, thp.hidden)
        opt = torch.optim.AdamW(head.parameters(), lr=thp.lr, weight_decay=thp.weight_decay)
        for epoch in range(thp.epochs):
            order = train_idx[torch.randperm(len(train_idx))]
            total = 0.0
            for start in range(0, len(order), thp.batch_size):
                b = order[start:start + thp.batch_size]
                logits = head(emb[e_all[b]], emb[q_all[b]])
                loss = nn.functional.binary_cross_entropy_with_logits(logits, y_all[b], pos_weight=pos_weight)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(b)
            curve.append(total / max(len(order), 1))
            if progress:
                progress(f"training the scope classifier: epoch {epoch + 1}/{thp.epochs}, loss {curve[-1]:.3f}",
                         0.6 + 0.4 * (epoch + 1) / thp.epochs)
    head.eval()
    report = {
        "key": key, "method": "serac", "artefact_version": ARTEFACT_VERSION, "encoder": thp.encoder,
        "encoder_fingerprint": encoder.fingerprint,
        "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(thp).items()},
        "data_digest": pairs.digest, "sources": pairs.sources, "sentences": len(pairs.texts),
        "pairs_train": len(train_idx), "pairs_heldout": int(held.sum()),
        "heldout": pair_scores(head, emb, pairs, held), "train": pair_scores(head, emb, pairs, ~held),
        "loss_curve": curve, "encode_seconds": t_enc, "seconds": time.perf_counter() - t0,
        "heldout_facts": list(pairs.heldout_facts), "trained_at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    for k in ("precision", "recall", "f1"):
        report[f"heldout_{k}"] = report["heldout"][k]
    tmp = _folder() / f"{key}.tmp"
    save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(tmp))
    tmp.replace(_folder() / f"{key}.safetensors")
    report_path.write_text(json.dumps(report, indent=1))
    _current_path(thp.encoder).write_text(json.dumps({"key": key}))
    log.info("SERAC scope classifier %s: held-out P=%.3f R=%.3f F1=%.3f in %.0fs", key[:12],
             report["heldout_precision"], report["heldout_recall"], report["heldout_f1"], report["seconds"])
    return report


def estimate_seconds(thp: SeracTrainHparams, device=None) -> float:
    """Encoding (timed on a sample, 0 if the embeddings are cached) plus training (one timed step)."""
    encoder = get_encoder(thp.encoder, device)
    pairs = _pairs(thp)
    path = _folder() / "embeddings" / f"{_digest({'encoder': encoder.fingerprint, 'texts': list(pairs.texts)})}.safetensors"
    sample = list(pairs.texts[:64])
    t = time.perf_counter()
    encoder.encode(sample)
    encode = 0.0 if path.is_file() else (time.perf_counter() - t) / max(len(sample), 1) * len(pairs.texts)
    head = Head(encoder.dim, thp.hidden)
    u = torch.randn(min(thp.batch_size, len(pairs.edit)), encoder.dim)
    opt = torch.optim.AdamW(head.parameters())
    t = time.perf_counter()
    for _ in range(3):
        loss = head(u, u).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    step = (time.perf_counter() - t) / 3
    steps = thp.epochs * math.ceil(len(pairs.edit) * (1 - thp.heldout_fraction) / thp.batch_size)
    return encode + steps * step
