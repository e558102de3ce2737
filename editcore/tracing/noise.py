"""The scale of causal tracing's noise: the standard deviation of the model's token embeddings.

Meng et al. corrupt the subject with Gaussian noise of standard deviation 3 sigma, where sigma is the empirical
standard deviation of the embedding layer's outputs (one number over every component); their code measures it
on the subjects of the fact set being traced. ``corpus="subjects"`` does the same with the catalog's subjects
(each as it appears mid-sentence: a leading space, no special tokens); a path to a text file measures it on
the first :data:`FILE_TOKENS` tokens of that file instead. The embedding layer's own output is used, so a
model that scales its embeddings (Gemma multiplies by sqrt(d_model)) is measured after the scaling, which is
also where the noise is added. Computed once per (model fingerprint, corpus) and kept as JSON.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch

from .. import paths
from ..errors import InputError

log = logging.getLogger(__name__)

VERSION = 1
FILE_TOKENS = 16384


def _corpus_id(corpus: str) -> str:
    if corpus == "subjects":
        from ..catalog import DATA_DIR

        facts = DATA_DIR / "facts.jsonl"
        return f"subjects:{paths.file_sha256(facts)[:16]}" if facts.is_file() else "subjects"
    path = Path(corpus).expanduser()
    if not path.is_file():
        raise InputError(f"noise corpus {corpus!r} is neither 'subjects' nor a readable text file")
    return f"file:{path.resolve()}:{paths.file_sha256(path)[:16]}"


def _token_ids(lm, corpus: str) -> list[list[int]]:
    tok = lm.tokenizer
    if corpus == "subjects":
        from ..catalog import load_catalog

        subjects = sorted({c.subject for c in load_catalog()})
        return [tok(" " + s, add_special_tokens=False)["input_ids"] for s in subjects]
    out, total = [], 0
    with open(Path(corpus).expanduser(), encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            ids = tok(" " + line, add_special_tokens=False)["input_ids"][:FILE_TOKENS - total]
            out.append(ids)
            total += len(ids)
            if total >= FILE_TOKENS:
                break
    return out


@torch.no_grad()
def embedding_std(lm, corpus: str = "subjects") -> dict:
    """``{"std", "corpus", "tokens"}``: the standard deviation over every component of the embedding layer's
    outputs for the tokens of ``corpus``, cached per model fingerprint."""
    cid = _corpus_id(corpus)
    key = {"fingerprint": lm.fingerprint, "corpus": cid, "v": VERSION}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    path = paths.sub("trace") / f"noise-{digest}.json"
    if path.is_file():
        try:
            got = json.loads(path.read_text())
            return {"std": float(got["std"]), "corpus": cid, "tokens": int(got["tokens"])}
        except (ValueError, KeyError):
            log.warning("ignoring an unreadable noise-scale cache %s", path)
    seqs = [s for s in _token_ids(lm, corpus) if s]
    if not seqs:
        raise InputError(f"the noise corpus {corpus!r} has no tokens")
    embed = lm.adapter.module("embed")
    flat = torch.tensor([t for s in seqs for t in s], device=lm.device)
    # Accumulated in float64 over chunks, so a long corpus never holds [tokens, d_model] at once.
    total = total_sq = 0.0
    n = 0
    for chunk in flat.split(4096):
        e = embed(chunk[None])[0].double()
        total += float(e.sum())
        total_sq += float((e * e).sum())
        n += e.numel()
    var = (total_sq - total * total / n) / max(n - 1, 1)
    out = {"std": float(max(var, 0.0) ** 0.5), "corpus": cid, "tokens": int(flat.numel())}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"key": key, **out}))
    tmp.replace(path)
    log.info("embedding std of %s over %d tokens of %s: %.4g", lm.name, out["tokens"], cid, out["std"])
    return out
