"""Impact scan: what else did an edit change? (The survey's point, Hsueh et al. 2024 §3.2: a fixed locality
set misses side effects, so look everywhere you can afford.)

Every prompt of a large pool (every prompt of the fact catalog, the benchmark in use, the user's own text)
is read by the unedited and by the edited model, and ranked by

    KL(n) = KL(P_post(· | n) ‖ P_pre(· | n)) = Σ_v P_post(v | n) (log P_post(v | n) − log P_pre(v | n)),

the NKL metric's divergence (:func:`editcore.metrics.nkl.kl_rows`, the same function, so the two agree on
every prompt they share), and by top-1 flips (the next token the model would write changed).

The unedited side is the same for every edit, so it is cached per model on disk, exactly: not the
distributions (262k floats a prompt on Gemma) but the final-normed hidden state at each prompt's last
token (``d_model`` float32 values), from which the unedited distribution is recomputed through the
unembedding: the same numbers the model computes, at the cost of one product with the unembedding per
prompt. A scan therefore runs, per chunk of prompts, the unembedding on the cached states of the
pristine model, then applies the patch and runs the edited model on the prompts (a forward pass whose
shared prefixes — the ``<bos>``, "The", a subject — are computed once per chunk, :func:`last_hidden`),
then compares. Each chunk runs in its own scope, so the shared model is pristine between chunks.

Cache files: ``$EDITSCOPE_HOME/impact/<sha256>.safetensors`` (tensor ``hidden`` ``[n, d]`` float32), keyed
by SHA-256 of canonical JSON of the model fingerprint, the pool part's prompts and :data:`VERSION`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from .. import paths, text
from .nkl import kl_rows

log = logging.getLogger(__name__)

Progress = Callable[[str, float], None]
VERSION = 1
CHUNK = 128  # prompts per scope: two [CHUNK, vocab] float32 distributions (268 MB on Gemma) at a time
CACHE_MIN = 64  # pool parts with fewer prompts are read afresh (they are the fact's own, or typed text)
GROUP_TOKENS = 3  # sequences sharing their first tokens (``<bos>`` + two) run that prefix once


@dataclass
class PoolPart:
    """A named list of prompts with one label per prompt (where it comes from: "P276:louvre · paraphrase")."""

    name: str
    prompts: list[str]
    sources: list[str]

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.prompts, ensure_ascii=False).encode()).hexdigest()


def _case_prompts(case) -> list[tuple[str, str]]:
    rows = [(case.edit_prompt, "edit prompt")]
    rows += [(p, "paraphrase") for p in case.paraphrases]
    rows += [(p.prompt, "neighbour") for p in case.neighbourhood]
    rows += [(p.prompt, "attribute") for p in case.attributes]
    rows += [(p.prompt, "one-hop") for p in case.one_hop]
    rows += [(p, "generation") for p in case.generation_prompts]
    return rows


def part_of_cases(name: str, cases, label: Callable | None = None) -> PoolPart:
    """Every distinct prompt of ``cases`` (edit prompt, paraphrases, neighbours, attributes, one-hop and
    generation prompts), labelled ``"<case id> · <kind>"`` (or ``label(case, kind)``)."""
    seen: dict[str, str] = {}
    for c in cases:
        for prompt, kind in _case_prompts(c):
            seen.setdefault(prompt, label(c, kind) if label else f"{c.id} · {kind}")
    return PoolPart(name, list(seen), list(seen.values()))


def part_of_texts(name: str, prompts: Sequence[str], source: str) -> PoolPart:
    clean = list(dict.fromkeys(" ".join(p.split()) for p in prompts if p and p.strip()))
    return PoolPart(name, clean, [source] * len(clean))


# ---- the forward pass ----------------------------------------------------------------------------------
def _groups(seqs: Sequence[list[int]]) -> tuple[list[tuple[int, list[int]]], list[int]]:
    """Sequences sharing their first :data:`GROUP_TOKENS` tokens: ``([(prefix length, members)], alone)``,
    the prefix being the members' longest common one, kept shorter than each member."""
    order = sorted(range(len(seqs)), key=lambda i: seqs[i])
    groups, alone = [], []
    at = 0
    while at < len(order):
        end = at + 1
        head = tuple(seqs[order[at]][:GROUP_TOKENS])
        while end < len(order) and len(head) == GROUP_TOKENS and tuple(seqs[order[end]][:GROUP_TOKENS]) == head:
            end += 1
        members = order[at:end]
        if len(members) > 1:
            first = seqs[members[0]]
            n = min(len(seqs[i]) for i in members) - 1
            for i in members[1:]:
                s = seqs[i]
                k = 0
                while k < n and s[k] == first[k]:
                    k += 1
                n = k
            if n >= 2:
                groups.append((n, members))
            else:
                alone += members
        else:
            alone += members
        at = end
    return groups, alone


def _pieces(seqs: Sequence[list[int]], groups, rows: int) -> list[tuple[int, list[int]]]:
    """Groups cut into pieces of at most ``rows // 2`` members of similar length (a group as large as the
    pool's "<bos> The" would otherwise be one batch padded to its longest member)."""
    out = []
    for n, members in groups:
        members = sorted(members, key=lambda i: len(seqs[i]))
        size = max(2, rows // 2)
        for start in range(0, len(members), size):
            piece = members[start:start + size]
            if len(piece) > 1:
                out.append((n, piece))
            else:
                out.append((0, piece))  # a piece of one runs alone
    return out


def _batches_of_pieces(seqs, pieces, rows: int):
    """Pieces for one shared-prefix forward each: sorted by their members' remaining length, a batch takes
    the next piece while the padded rest stays near its real tokens and the rows stay within ``rows``."""
    def rest(piece):
        n, members = piece
        return [len(seqs[i]) - n for i in members]

    batch, real, width = [], 0, 0
    for piece in sorted(pieces, key=lambda g: max(rest(g))):
        r = rest(piece)
        w = max(width, max(r))
        count = sum(len(m) for _, m in batch) + len(r)
        if batch and (count > rows or count * w > 1.25 * (real + sum(r)) + 32):
            yield batch
            batch, real, w = [], 0, max(r)
        batch.append(piece)
        real, width = real + sum(r), w
    if batch:
        yield batch


@torch.no_grad()
def last_hidden(lm, seqs: Sequence[list[int]], batch_rows: int = 64) -> torch.Tensor:
    """Final-normed hidden states ``[n, d]`` at the last token of each sequence, from batched forwards in
    which sequences sharing a prefix run it once (:func:`editcore.text.hidden_at_shared`; a family whose
    cache cannot repeat rows runs plain right-padded batches, which give the same states)."""
    out: list[torch.Tensor | None] = [None] * len(seqs)
    groups, alone = _groups(seqs)
    shared = []
    for n, members in _pieces(seqs, groups, batch_rows):
        if n:
            shared.append((n, members))
        else:
            alone.extend(members)
    for batch in _batches_of_pieces(seqs, shared, batch_rows):
        try:
            got = text.hidden_at_shared(lm, [(seqs[m[0]][:n], [seqs[i] for i in m]) for n, m in batch],
                                        [[[len(seqs[i]) - 1] for i in m] for _, m in batch])
        except Exception as exc:  # noqa: BLE001 - plain passes give the same numbers
            log.info("shared-prefix forward unavailable for %s (%s)", lm.adapter.family, exc)
            alone.extend(i for _, m in batch for i in m)
            continue
        for (_, m), hs in zip(batch, got):
            for i, h in zip(m, hs):
                out[i] = h[0]
    alone.sort(key=lambda i: len(seqs[i]))
    for idx in text.batches(len(alone), batch_rows):
        members = [alone[j] for j in idx]
        for i, h in zip(members, text.hidden_at(lm, [seqs[i] for i in members], [[len(seqs[i]) - 1] for i in members])):
            out[i] = h[0]
    return torch.stack(out) if out else torch.empty(0, lm.adapter.d_model)


def _encode(lm, prompts: Sequence[str]) -> list[list[int]]:
    ids = [text.prompt_ids(lm.tokenizer, p) for p in prompts]
    for s in ids:
        text.check_length(lm, len(s), "prompt")
    return ids


# ---- the unedited side, cached ----------------------------------------------------------------------------
def _cache_path(lm, part: PoolPart):
    key = {"fingerprint": lm.fingerprint, "prompts": part.digest(), "n": len(part.prompts), "version": VERSION,
           "what": "final-normed hidden state at the last prompt token"}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return paths.sub("impact") / f"{digest}.safetensors", key


def is_cached(lm, part: PoolPart) -> bool:
    return len(part.prompts) < CACHE_MIN or _cache_path(lm, part)[0].is_file()


def unedited_hidden(lm, part: PoolPart, progress: Progress | None = None) -> torch.Tensor:
    """The pristine model's final-normed hidden state at the last token of every prompt of ``part``
    ``[n, d]`` (float32, on the model's device): from the disk cache, else computed (under the model's lock,
    with no edit applied) and cached when the part has :data:`CACHE_MIN` prompts or more."""
    from safetensors.torch import load_file, save_file

    path, key = _cache_path(lm, part)
    if path.is_file():
        return load_file(str(path))["hidden"].to(lm.device)
    hs = []
    with lm.scope():
        ids = _encode(lm, part.prompts)
        step = 256
        for start in range(0, len(ids), step):
            if progress:
                progress(f"reading the unedited model on the {part.name} prompts ({start}/{len(ids)})",
                         start / max(len(ids), 1))
            hs.append(last_hidden(lm, ids[start:start + step]).float())
    h = torch.cat(hs) if hs else torch.empty(0, lm.adapter.d_model)
    if len(part.prompts) >= CACHE_MIN:
        tmp = path.with_suffix(".tmp")
        save_file({"hidden": h.contiguous().cpu()}, str(tmp), metadata={"key": json.dumps(key, sort_keys=True)})
        tmp.replace(path)
    if progress:
        progress(f"read the unedited model on the {part.name} prompts", 1.0)
    return h


# ---- the scan ------------------------------------------------------------------------------------------------
@dataclass
class ScanRow:
    prompt: str
    source: str
    part: str
    kl: float
    top_pre: str
    top_post: str
    p_top_pre: tuple[float, float]  # P(the unedited top-1 token) before, after
    p_top_post: tuple[float, float]  # P(the edited top-1 token) before, after
    flipped: bool
    new_top1: bool  # the new target's first token became the top-1 here

    def to_dict(self) -> dict:
        return {"prompt": self.prompt, "source": self.source, "part": self.part, "kl": self.kl,
                "top_pre": self.top_pre, "top_post": self.top_post, "p_top_pre": list(self.p_top_pre),
                "p_top_post": list(self.p_top_post), "flipped": self.flipped, "new_top1": self.new_top1}


@dataclass
class Scan:
    rows: list[ScanRow] = field(default_factory=list)
    seconds: float = 0.0
    vocab_size: int = 0

    def to_dict(self) -> dict:
        return {"rows": [r.to_dict() for r in self.rows], "seconds": self.seconds, "vocab_size": self.vocab_size,
                "n": len(self.rows), "prompts_per_second": len(self.rows) / self.seconds if self.seconds else None}


def _merge(parts: Sequence[PoolPart]) -> tuple[list[str], list[str], list[str], list[tuple[int, int]]]:
    """The pool's distinct prompts in part order, each with its first source and part, and where its
    cached unedited state is (part index, row)."""
    prompts, sources, names, where, seen = [], [], [], [], set()
    for pi, part in enumerate(parts):
        for ri, (p, s) in enumerate(zip(part.prompts, part.sources)):
            if p not in seen:
                seen.add(p)
                prompts.append(p)
                sources.append(s)
                names.append(part.name)
                where.append((pi, ri))
    return prompts, sources, names, where


@torch.no_grad()
def scan(lm, patch, parts: Sequence[PoolPart], *, target_new: str | None = None, progress: Progress | None = None,
         on_chunk: Callable[[Scan, int], None] | None = None, chunk: int = CHUNK) -> Scan:
    """Scan every prompt of ``parts`` (see the module docstring). ``on_chunk(scan_so_far, total)`` is called
    after each chunk (the dashboard redraws the ranking as it grows); rows come in pool order."""
    t0 = time.perf_counter()
    hidden = [unedited_hidden(lm, part, progress) if len(part.prompts) >= CACHE_MIN else None for part in parts]
    prompts, sources, names, where = _merge(parts)
    tok = lm.tokenizer
    new_first = text.target_ids(tok, target_new)[0] if target_new else None
    out = Scan()
    total = len(prompts)
    for start in range(0, total, chunk):
        idx = range(start, min(total, start + chunk))
        with lm.scope() as s:
            small = [i for i in idx if hidden[where[i][0]] is None]
            fresh = dict(zip(small, last_hidden(lm, _encode(lm, [prompts[i] for i in small])))) if small else {}
            h_pre = torch.stack([fresh[i] if i in fresh else hidden[where[i][0]][where[i][1]] for i in idx])
            lp_pre = torch.log_softmax(lm.adapter.logits(h_pre).float(), dim=-1)
            s.apply(patch, checkpoint=False)
            h_post = last_hidden(lm, _encode(lm, [prompts[i] for i in idx]))  # input rewrites apply here
            lp_post = torch.log_softmax(lm.adapter.logits(h_post).float(), dim=-1)
        kl = kl_rows(lp_post, lp_pre).cpu()
        a, b = lp_pre.argmax(-1), lp_post.argmax(-1)
        rows_ = torch.arange(len(idx), device=lp_pre.device)
        pa = torch.stack([lp_pre[rows_, a], lp_post[rows_, a], lp_pre[rows_, b], lp_post[rows_, b]], 1).exp().cpu()
        a, b = a.cpu().tolist(), b.cpu().tolist()
        for j, i in enumerate(idx):
            out.rows.append(ScanRow(prompts[i], sources[i], names[i], float(kl[j]), tok.decode([a[j]]),
                                    tok.decode([b[j]]), (float(pa[j, 0]), float(pa[j, 1])),
                                    (float(pa[j, 2]), float(pa[j, 3])), a[j] != b[j],
                                    new_first is not None and b[j] == new_first and a[j] != new_first))
        out.vocab_size = int(lp_pre.shape[-1])
        del lp_pre, lp_post
        out.seconds = time.perf_counter() - t0
        done = len(out.rows)
        if progress:
            rate = done / out.seconds if out.seconds else 0.0
            progress(f"impact scan: {done}/{total} prompts ({rate:.0f} prompts/s)", done / max(total, 1))
        if on_chunk:
            on_chunk(out, total)
    return out


def summary(rows: Sequence[dict]) -> dict:
    """Counts and quantiles of a scan's KL, its flips and where the new target became the top-1."""
    kls = sorted(r["kl"] for r in rows if r.get("kl") is not None)
    n = len(kls)

    def q(p):
        return kls[min(n - 1, int(math.floor(p * (n - 1) + 0.5)))] if n else None

    return {"n": n, "mean": sum(kls) / n if n else None, "median": q(0.5), "p90": q(0.9), "p99": q(0.99),
            "max": kls[-1] if n else None, "over_0.01": sum(k > 0.01 for k in kls),
            "over_0.1": sum(k > 0.1 for k in kls), "over_1": sum(k > 1 for k in kls),
            "flipped": sum(bool(r.get("flipped")) for r in rows),
            "new_top1": sum(bool(r.get("new_top1")) for r in rows)}
