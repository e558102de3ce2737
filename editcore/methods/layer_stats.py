"""Layer statistics: the second moment ``C = E[k k^T]`` of MLP keys, which ROME and MEMIT use to keep
other keys' outputs in place.

A key is the input of the MLP output projection at one token (see :mod:`editcore.methods.common`). The
statistics are computed over a text corpus, counted in *tokens* (not rows), accumulated in float64 on the
model's device, and cached on disk as safetensors under ``$EDITSCOPE_HOME/stats``; the file name is the
SHA-256 of the canonical JSON of (model fingerprint, layer, corpus id, token count, sequence length,
version).

Corpora (``corpus=``):

* ``"auto"`` (default): ``$EDITSCOPE_STATS_CORPUS`` when set (a local text file), else the corpus that
  ships with EditScope (``"bundled"``);
* ``"bundled"``: ``data/corpus/wikitext2_test_excerpt.txt``, an excerpt of the WikiText-2 test split
  (CC BY-SA 3.0; source, licence and excerpt rule in ``data/corpus/README.md``). Its id names the file's
  SHA-256, not its path, so a checkout moved elsewhere keeps its cached statistics;
* a path to a local text file (e.g. ``../shared/data/wikitext/wiki.test.raw``; its id includes the file's
  SHA-256);
* ``"hf:<dataset>[:<config>[:<split>]]"``: a ``datasets`` dataset with a ``text`` column (needs it cached or
  the hub reachable), e.g. ``hf:Salesforce/wikitext:wikitext-103-raw-v1:train``, ROME's kind of corpus;
* ``"model"``: text sampled from the model itself (plain sampling from BOS, seed 0), an explicit choice: an
  *approximation* of the pre-training key distribution (ROME used 100k Wikipedia samples) that costs minutes
  of generation on a CPU. The sampled token ids are cached.

``n_tokens == 0`` means "no statistics": :func:`second_moment` returns ``None`` and methods use the identity.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch

from .. import hooks, paths
from ..errors import InputError
from ..text import padded

log = logging.getLogger(__name__)

Progress = Callable[[str, float], None]

VERSION = 1
SEQ_LEN = 128
# Small enough that one Gemma-3-270M layer takes well under 2 minutes on 2 CPU cores, large enough that
# ROME's edits no longer change with more (docs/performance.md).
DEFAULT_TOKENS = 16384
_BATCH_TOKENS = 4096


# ---- corpora ----------------------------------------------------------------------------------------
BUNDLED_CORPUS = paths.repo_root() / "data" / "corpus" / "wikitext2_test_excerpt.txt"


def resolve_corpus(corpus: str | None) -> str:
    """A stable corpus id for ``corpus`` (see the module docstring); raises :class:`InputError` if unusable."""
    spec = (corpus or "auto").strip()
    if spec == "auto":
        # A local corpus the user pointed at wins; otherwise the one that ships with EditScope.
        spec = os.environ.get("EDITSCOPE_STATS_CORPUS") or "bundled"
    if spec == "bundled":
        if not BUNDLED_CORPUS.is_file():
            raise InputError(f"the bundled statistics corpus {BUNDLED_CORPUS} is missing; reinstall EditScope "
                             "or give stats_corpus a text file, 'hf:<dataset>' or 'model'")
        return f"bundled:{BUNDLED_CORPUS.name}:{paths.file_sha256(BUNDLED_CORPUS)[:16]}"
    if spec == "model" or spec.startswith("hf:"):
        return spec
    path = Path(spec).expanduser()
    if not path.is_file():
        raise InputError(f"corpus {corpus!r} is neither 'auto', 'bundled', 'model', 'hf:<dataset>' nor a readable "
                         "file")
    return f"file:{path.resolve()}:{paths.file_sha256(path)[:16]}"


def corpus_label(corpus_id: str) -> str:
    """A short readable name of a corpus id (for progress messages)."""
    if corpus_id.startswith("bundled:"):
        return "bundled WikiText-2 excerpt"
    if corpus_id.startswith("file:"):
        return Path(corpus_id[len("file:"):].rsplit(":", 1)[0]).name
    return "text sampled from the model" if corpus_id == "model" else corpus_id


def _corpus_file(corpus_id: str) -> str | None:
    if corpus_id.startswith("bundled:"):
        return str(BUNDLED_CORPUS)
    if corpus_id.startswith("file:"):
        return corpus_id[len("file:"):].rsplit(":", 1)[0]
    return None


def _text_chunks(corpus_id: str) -> Iterator[str]:
    path = _corpus_file(corpus_id)
    if path is not None:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                line = line.strip()
                # WikiText headings (" = Title = ") carry almost no text; skip them and blank lines.
                if line and not (line.startswith("=") and line.endswith("=")):
                    yield line
        return
    parts = corpus_id[len("hf:"):].split(":")
    try:
        import datasets

        ds = datasets.load_dataset(parts[0], parts[1] if len(parts) > 1 else None,
                                   split=parts[2] if len(parts) > 2 else "train", streaming=True)
    except Exception as exc:  # noqa: BLE001 - datasets raises many kinds; the user needs one line
        raise InputError(f"cannot load corpus {corpus_id!r}: {str(exc).splitlines()[0][:200]}") from None
    for row in ds:
        text = (row.get("text") or "").strip()
        if text and not (text.startswith("=") and text.endswith("=")):
            yield text


def _token_sequences(lm, corpus_id: str, n_tokens: int, seq_len: int,
                     progress: Progress | None = None) -> list[list[int]]:
    """Sequences of at most ``seq_len`` tokens (BOS included when the model uses one) totalling ``n_tokens``."""
    if corpus_id == "model":
        return _sampled_sequences(lm, n_tokens, seq_len, progress=progress)
    tok = lm.tokenizer
    bos = [tok.bos_token_id] if _uses_bos(tok) else []
    body = seq_len - len(bos)
    seqs: list[list[int]] = []
    buf: list[int] = []
    total = 0
    for text in _text_chunks(corpus_id):
        buf.extend(tok(" " + text, add_special_tokens=False)["input_ids"])
        while len(buf) >= body and total < n_tokens:
            take = min(body, n_tokens - total - len(bos))
            if take <= 0:
                break
            seqs.append(bos + buf[:take])
            total += take + len(bos)
            buf = buf[take:]
        if total >= n_tokens - len(bos):
            break
    if total < n_tokens:
        log.warning("corpus %s has only %d tokens (asked for %d)", corpus_id, total, n_tokens)
    return seqs


def _uses_bos(tok) -> bool:
    ids = tok("a", add_special_tokens=True)["input_ids"]
    return tok.bos_token_id is not None and bool(ids) and ids[0] == tok.bos_token_id


@torch.no_grad()
def _sampled_sequences(lm, n_tokens: int, seq_len: int, seed: int = 0,
                       progress: Progress | None = None) -> list[list[int]]:
    """Text sampled from the model (temperature 1, no top-k), cached as token ids per fingerprint."""
    key = {"fingerprint": lm.fingerprint, "n_tokens": n_tokens, "seq_len": seq_len, "seed": seed, "v": VERSION}
    path = paths.sub("stats") / f"corpus-{_digest(key)}.json"
    if path.is_file():
        return json.loads(path.read_text())["seqs"]
    tok = lm.tokenizer
    start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    pad = tok.pad_token_id if tok.pad_token_id is not None else start
    n_seq = max(1, -(-n_tokens // seq_len))
    seqs: list[list[int]] = []
    devices = [lm.device] if lm.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for i in range(0, n_seq, 32):
            b = min(32, n_seq - i)
            ids = torch.full((b, 1), start, dtype=torch.long, device=lm.device)
            gen = lm.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, top_k=0,
                                    max_new_tokens=seq_len - 1, min_new_tokens=seq_len - 1, pad_token_id=pad)
            seqs.extend(row.tolist() for row in gen)
            if progress:
                progress(f"sampling text from the model ({len(seqs)}/{n_seq} sequences)", len(seqs) / n_seq)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"key": key, "seqs": seqs}))
    tmp.replace(path)
    return seqs


# ---- statistics -------------------------------------------------------------------------------------------
def _digest(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def cache_key(lm, layer: int, corpus_id: str, n_tokens: int, seq_len: int = SEQ_LEN) -> dict:
    return {"fingerprint": lm.fingerprint, "layer": int(layer), "corpus": corpus_id, "n_tokens": int(n_tokens),
            "seq_len": int(seq_len), "slot": "mlp_out.input", "stat": "mom2", "version": VERSION}


def cache_path(key: dict) -> Path:
    return paths.sub("stats") / f"{_digest(key)}.safetensors"


def second_moment(lm, layer: int, n_tokens: int = DEFAULT_TOKENS, corpus: str | None = None,
                  progress: Progress | None = None) -> torch.Tensor | None:
    """``E[k k^T]`` ``[d_mlp, d_mlp]`` (float64, on the model's device) of layer ``layer``; ``None`` if
    ``n_tokens == 0``."""
    return second_moments(lm, [layer], n_tokens, corpus, progress)[layer]


def second_moments(lm, layers: Sequence[int], n_tokens: int = DEFAULT_TOKENS, corpus: str | None = None,
                   progress: Progress | None = None) -> dict[int, torch.Tensor | None]:
    """Like :func:`second_moment` for several layers; missing layers are computed in one pass."""
    from safetensors.torch import load_file, save_file

    for layer in layers:
        lm.adapter.check_layer(layer)
    if n_tokens < 0:
        raise InputError(f"the statistics sample count must be >= 0 (got {n_tokens})")
    if n_tokens == 0:
        return {layer: None for layer in layers}
    corpus_id = resolve_corpus(corpus)
    out: dict[int, torch.Tensor | None] = {}
    missing = []
    for layer in layers:
        path = cache_path(cache_key(lm, layer, corpus_id, n_tokens))
        if path.is_file():
            out[layer] = load_file(str(path))["mom2"].to(lm.device)
        else:
            missing.append(layer)
    if missing:
        t0 = time.perf_counter()
        mom2, count = _accumulate(lm, missing, corpus_id, n_tokens, progress)
        secs = time.perf_counter() - t0
        for layer in missing:
            c = mom2[layer] / max(count, 1)
            key = cache_key(lm, layer, corpus_id, n_tokens)
            path = cache_path(key)
            tmp = path.with_suffix(".tmp")
            meta = {"key": json.dumps(key, sort_keys=True), "tokens_seen": str(count), "seconds": f"{secs:.2f}"}
            save_file({"mom2": c.contiguous().cpu()}, str(tmp), metadata=meta)
            tmp.replace(path)
            out[layer] = c
        log.info("layer statistics for layers %s: %d tokens in %.1fs", missing, count, secs)
    return out


def not_positive_definite_warning(layers: Sequence[int], n_tokens: int, d_mlp: int) -> str:
    """The sentence an edit carries when its statistics had no Cholesky factor (see :func:`cholesky_factors`)."""
    return (f"the layer statistics of layer(s) {', '.join(map(str, layers))} ({n_tokens} tokens for "
            f"{d_mlp}-dimensional keys) are not positive definite, so C^-1 is ill-defined and the update may be "
            "far off; use more statistics samples")


def cholesky_factors(lm, layers: Sequence[int], n_tokens: int = DEFAULT_TOKENS, corpus: str | None = None,
                     progress: Progress | None = None) -> dict[int, torch.Tensor | None]:
    """Lower Cholesky factors ``L`` (``C = L L^T``, float64, on the model's device) of the layers' second
    moments, cached on disk beside them. ROME solves ``C^-1 k*`` and MEMIT ``(lam C + K K^T)^-1 K`` at every
    edit; with ``L`` at hand a solve costs O(d^2) per column instead of factorising a ``d x d`` matrix.
    ``None`` for a layer whose ``C`` is not positive
    definite (too few tokens; callers then solve with ``C`` itself) and for every layer when ``n_tokens``
    is 0 (no statistics)."""
    from safetensors.torch import load_file, save_file

    out: dict[int, torch.Tensor | None] = {}
    if n_tokens == 0:
        return {layer: None for layer in layers}
    corpus_id = resolve_corpus(corpus)
    paths_ = {layer: cache_path({**cache_key(lm, layer, corpus_id, n_tokens), "stat": "mom2_cholesky"})
              for layer in layers}
    missing = [layer for layer in layers if not paths_[layer].is_file()]
    covs = second_moments(lm, missing, n_tokens, corpus, progress) if missing else {}
    for layer in layers:
        path = paths_[layer]
        if layer in covs:
            chol, info = torch.linalg.cholesky_ex(covs[layer].double())
            pd = int(info) == 0 and bool(torch.isfinite(chol).all())
            tmp = path.with_suffix(".tmp")
            # A matrix that is not positive definite is recorded as such, so it is not factorised again.
            save_file({"chol": chol.contiguous().cpu() if pd else torch.zeros(0, dtype=torch.float64)}, str(tmp),
                      metadata={"positive_definite": str(pd)})
            tmp.replace(path)
            out[layer] = chol if pd else None
        else:
            t = load_file(str(path))["chol"]
            out[layer] = t.to(lm.device) if t.numel() else None
    return out


@torch.no_grad()
def _accumulate(lm, layers: list[int], corpus_id: str, n_tokens: int,
                progress: Progress | None) -> tuple[dict[int, torch.Tensor], int]:
    if progress:
        progress(f"reading {corpus_label(corpus_id)}", 0.0)
    seqs = _token_sequences(lm, corpus_id, n_tokens, SEQ_LEN, progress)
    d = lm.adapter.d_mlp
    dev = lm.device
    acc = {layer: torch.zeros(d, d, dtype=torch.float64, device=dev) for layer in layers}
    top = max(layers)
    modules = {layer: lm.adapter.module("mlp_out", layer) for layer in layers}
    per_batch = max(1, _BATCH_TOKENS // SEQ_LEN)
    seen = 0
    total = sum(len(s) for s in seqs)
    for start in range(0, len(seqs), per_batch):
        batch = seqs[start:start + per_batch]
        ids, mask = padded(lm, batch)
        keep = mask.bool()

        def grab(layer):
            def pre(args):
                k = args[0][keep].to(torch.float64)
                acc[layer].addmm_(k.T, k)
                if layer == top:  # nothing above the highest layer asked for is needed
                    raise hooks.StopForward
            return pre

        with hooks.together(hooks.on_input(m, grab(layer)) for layer, m in modules.items()):
            try:
                lm.model.base_model(input_ids=ids, attention_mask=mask, use_cache=False)
            except hooks.StopForward:
                pass
        seen += int(keep.sum())
        if progress:
            progress(f"layer {', '.join(map(str, layers))} statistics: {seen}/{total} tokens "
                     f"({corpus_label(corpus_id)})", seen / max(total, 1))
    return acc, seen


def cached_info(lm, layer: int, n_tokens: int, corpus: str | None = None) -> dict | None:
    """Metadata of a cached statistic (tokens seen, seconds it took) or ``None`` if not cached."""
    from safetensors import safe_open

    path = cache_path(cache_key(lm, layer, resolve_corpus(corpus), n_tokens))
    if not path.is_file():
        return None
    with safe_open(str(path), "pt") as f:
        return dict(f.metadata() or {})
