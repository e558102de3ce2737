"""Generation fluency texts: what ROME's n-gram entropy (:func:`editcore.metrics.general.ngram_entropy`) is
computed on, in two modes.

* ``"reference"`` — ROME's ``test_generation``: every generation prompt of the fact, continued by top-k 5
  sampling until the whole text (prompt included) is 100 tokens (``generate_fast(max_out_len=100)``), and
  the entropy taken over the full text, prompt included, NFKD-normalised with blank lines joined, as ROME's
  ``generate_fast`` returns it. Sampling is seeded, so the unedited and edited model draw from the same
  random stream (and a result can be reproduced).
* ``"quick"`` — the dashboard's: greedy continuations of 16 tokens of the first two generation prompts,
  entropy over the continuation only. Read it as a before/after comparison, not against ROME's tables.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Sequence

import torch

from .. import text as textmod
from ..decoding import eos_ids
from .scoring import _TEXT_CACHE, TEXT_CACHE_SIZE, _get, _put

MODES = ("quick", "reference")
REFERENCE_MAX_LEN = 100  # tokens of prompt + continuation (ROME's max_out_len)
REFERENCE_TOP_K = 5
QUICK_TOKENS = 16
QUICK_PROMPTS = 2
NOTES = {
    "quick": "quick: ROME n-gram entropy (bits; 2/3·H2, 4/3·H3 averaged) of 16-token greedy continuations of two "
             "generation prompts; compare before with after, not with ROME's tables",
    "reference": "reference (ROME): n-gram entropy of every generation prompt's text sampled top-k 5 to 100 tokens",
}


@torch.no_grad()
def sample_tokens(lm, prompts: Sequence[str], max_len: int = REFERENCE_MAX_LEN, top_k: int = REFERENCE_TOP_K,
                  seed: int = 0, batch_size: int = 16) -> list[list[int]]:
    """Top-k sampled continuations (token ids) of each prompt until prompt + continuation hold ``max_len``
    tokens or an end-of-sequence token comes; a key/value cache, left padding, one seeded CPU generator."""
    tok = lm.tokenizer
    eos = eos_ids(lm)
    gen = torch.Generator().manual_seed(seed)
    out: list[list[int]] = []
    for idx in textmod.batches(len(prompts), batch_size):
        enc = [textmod.prompt_ids(tok, prompts[i]) for i in idx]
        want = [max(0, max_len - len(e)) for e in enc]
        ids, mask = textmod.padded(lm, enc, left=True)
        h, cache = textmod.cached_forward(lm, ids, mask, textmod.position_ids(mask))
        pos = torch.tensor([[len(e)] for e in enc], device=ids.device)
        rows: list[list[int]] = [[] for _ in enc]
        done = [w == 0 for w in want]
        logits = lm.adapter.logits(h.last_hidden_state[:, -1]).float()
        for _ in range(max(want, default=0)):
            top = torch.topk(torch.softmax(logits, -1).cpu(), top_k, dim=-1)
            pick = torch.multinomial(top.values / top.values.sum(-1, keepdim=True), 1, generator=gen)
            nxt = top.indices.gather(1, pick)[:, 0]
            for r, t in enumerate(nxt.tolist()):
                if not done[r]:
                    rows[r].append(t)
                    done[r] = t in eos or len(rows[r]) >= want[r]
            if all(done):
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
            h, cache = textmod.cached_forward(lm, nxt.to(ids.device)[:, None], mask, pos, cache)
            pos = pos + 1
            logits = lm.adapter.logits(h.last_hidden_state[:, -1]).float()
        out.extend(rows)
    return out


def reference_texts(lm, prompts: Sequence[str], seed: int = 0) -> list[str]:
    """ROME's generation texts: prompt + sampled continuation, normalised as ``generate_fast`` does."""
    tok = lm.tokenizer
    texts = []
    for p, row in zip(prompts, sample_tokens(lm, prompts, seed=seed)):
        full = p + tok.decode(row, skip_special_tokens=True)
        texts.append(unicodedata.normalize("NFKD", full).replace("\n\n", " "))
    return texts


def fluency_texts(scorer, prompts: Sequence[str], mode: str, seed: int = 0) -> list[str]:
    """The texts whose entropy ``mode`` measures, read through ``scorer`` (a pre-edit scorer memoises and, for
    the pristine model, caches them; a frozen one must have read them before the edit)."""
    if mode not in MODES:
        raise ValueError(f"fluency mode must be one of {MODES}")
    if mode == "quick":
        return scorer.greedy(list(prompts)[:QUICK_PROMPTS], QUICK_TOKENS)
    prompts = list(prompts)
    digest = hashlib.sha256("\x00".join(prompts).encode()).hexdigest()
    memo_key = ("sampled", seed, digest)
    if memo_key in scorer._texts:
        return scorer._texts[memo_key]
    key = (scorer.lm.fingerprint, scorer.state, "sampled", REFERENCE_MAX_LEN, REFERENCE_TOP_K, seed, digest)
    if scorer.pre and (hit := _get(_TEXT_CACHE, key)) is not None:
        scorer._texts[memo_key] = list(hit)
        return list(hit)
    scorer._check(["sampled generations"])
    texts = reference_texts(scorer.lm, prompts, seed)
    scorer._texts[memo_key] = texts
    if scorer.pre:
        _put(_TEXT_CACHE, key, texts, TEXT_CACHE_SIZE)
    return texts


def fluency_prompts(prompts: Sequence[str], mode: str) -> list[str]:
    """The generation prompts a mode uses (all of them for the reference)."""
    return list(prompts) if mode == "reference" else list(prompts)[:QUICK_PROMPTS]
