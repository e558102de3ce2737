"""Greedy decoding of the model as it is now (edited or not), with the drafts that make reading an edited
model after the unedited one cheap. Same tokens as ``generate(do_sample=False)``; tests compare them on every
family."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from .text import batches, cached_forward, check_length, model_device, pad_id, padded, position_ids, prompt_ids

log = logging.getLogger(__name__)


@torch.no_grad()
def greedy(lm, prompts: Sequence[str], max_new_tokens: int = 8, batch_size: int = 16) -> list[str]:
    """Greedy continuations (without the prompt), batched with left padding."""
    tok = lm.tokenizer
    return [tok.decode(row, skip_special_tokens=True) for row in greedy_tokens(lm, prompts, max_new_tokens, batch_size)]


def greedy_tokens(lm, prompts: Sequence[str], max_new_tokens: int = 8, batch_size: int = 16,
                  lengths: Sequence[int] | None = None,
                  drafts: Sequence[Sequence[int] | None] | None = None) -> list[list[int]]:
    """Greedy continuation token ids (``max_new_tokens`` per prompt, padded after an end-of-sequence). The
    first ``n`` of them are the greedy continuation of length ``n``, so callers needing several lengths
    generate once; ``lengths`` (one per prompt) says how many each prompt needs, the rest is padding.
    ``drafts`` (one guess per prompt, or None) only make it faster: see :func:`greedy_loop`."""
    tok = lm.tokenizer
    pad = pad_id(tok)
    outs: list[list[int]] = []
    for idx in batches(len(prompts), batch_size):
        enc = [prompt_ids(tok, prompts[i]) for i in idx]
        for e in enc:
            check_length(lm, len(e) + max_new_tokens, "prompt + generated text")
        ids, mask = padded(lm, enc, left=True)
        width = ids.shape[1]
        try:
            if not _fits_window(lm, width + max_new_tokens):
                raise ValueError("a padded batch longer than the sliding attention window")
            gen = greedy_loop(lm, enc, max_new_tokens, None if lengths is None else [lengths[i] for i in idx],
                               None if drafts is None else [drafts[i] for i in idx])
        except Exception as exc:  # a family whose cache API differs: transformers' own generate is exact too
            log.info("own greedy loop failed for %s (%s); using generate()", lm.adapter.family, exc)
            gen = lm.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                    do_sample=False, pad_token_id=pad, num_beams=1)[:, width:]
        outs.extend(row.tolist() for row in gen)
    return outs


def _fits_window(lm, n_columns: int) -> bool:
    """Whether ``n_columns`` fit the model's sliding attention window (if it has one). Beyond it the greedy
    loop hands over to ``generate`` as a precaution: once, on a tiny model with a 4-token window and a
    left-padded batch, the own loop's tokens differed from ``generate``'s (not reproduced in later runs; a
    near-tie of a random model flipped by float rounding is the likely cause, but it was not proven)."""
    window = getattr(lm.model.config, "sliding_window", None)
    return not isinstance(window, int) or window <= 0 or n_columns <= window


def eos_ids(lm) -> set[int]:
    """The token ids that end a generation (the generation config's, else the tokenizer's)."""
    eos = getattr(getattr(lm.model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        eos = lm.tokenizer.eos_token_id
    return {int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos]) if e is not None}


@torch.no_grad()
def greedy_loop(lm, prompts: Sequence[Sequence[int]], n: int, lengths: Sequence[int] | None = None,
                 drafts: Sequence[Sequence[int] | None] | None = None) -> torch.Tensor:
    """Greedy decoding with a key/value cache, the next token read through :meth:`ArchAdapter.logits`.

    Same result as ``generate(do_sample=False)`` (argmax at every step; after an end-of-sequence token a row
    is padding). Row ``i`` stops after ``lengths[i]`` tokens (default ``n``); finished rows leave the batch
    and the cache (rows do not interact, so the others' tokens are unchanged).

    ``drafts[i]``, a guess of row ``i``'s continuation (the unedited model's, when reading an edited one),
    is checked the way speculative decoding checks a draft: the prompt and the draft run in one pass, the
    row's greedy tokens are the argmaxes at the draft's positions up to and including the first one that
    differs from the draft (each argmax there is conditioned on a draft prefix that equals the greedy
    prefix), the draft's positions after that are masked out of the cache, and decoding goes on from there.
    A wrong draft costs one longer first pass; a right one saves a decoding step per token. Returns ``[rows,
    n]`` token ids, padded with :func:`pad_id`."""
    rows = len(prompts)
    dev = model_device(lm)
    pad = pad_id(lm.tokenizer)
    want = [n] * rows if lengths is None else [min(int(x), n) for x in lengths]
    prompts = [list(p) for p in prompts]
    drafts = [list(d or [])[:max(0, w - 1)] for d, w in zip(drafts or [None] * rows, want)]
    seqs = [p + d for p, d in zip(prompts, drafts)]
    ids, mask = padded(lm, seqs, left=True)
    width = ids.shape[1]
    out, cache = cached_forward(lm, ids, mask, position_ids(mask))
    # The argmax after the prompt's last token and after every draft token, all rows in one unembedding call.
    where = [(r, width - len(d) - 1 + t) for r, d in enumerate(drafts) for t in range(len(d) + 1)]
    h = out.last_hidden_state[[r for r, _ in where], [c for _, c in where]]
    best = lm.adapter.logits(h).argmax(-1).tolist()
    eos = eos_ids(lm)
    gen = torch.full((rows, n), pad, dtype=torch.long, device=dev)
    count = [0] * rows
    finished = [False] * rows
    nxt = [pad] * rows
    next_pos = [0] * rows
    k = 0
    for r, d in enumerate(drafts):
        got = best[k:k + len(d) + 1]
        k += len(d) + 1
        j = 0  # accept the argmax at each position; stop at the first that leaves the draft
        while True:
            tok = got[j]
            gen[r, j] = tok
            if tok in eos or j + 1 >= want[r]:
                finished[r] = True
                break
            if j >= len(d) or tok != d[j]:
                break
            j += 1
        count[r] = j + 1
        nxt[r] = gen[r, j].item()
        next_pos[r] = len(prompts[r]) + j
        # Draft tokens after the first departure are not this row's text: hide them from later steps.
        if j < len(d):
            mask[r, width - len(d) + j:] = 0
    alive = torch.tensor([r for r in range(rows) if not finished[r]], dtype=torch.long, device=dev)
    if len(alive) < rows and len(alive) and hasattr(cache, "batch_select_indices"):
        cache.batch_select_indices(alive)
        mask = mask[alive]
    elif len(alive) < rows:
        alive = torch.arange(rows, device=dev)  # cannot shrink: keep every row, finished ones are ignored
    nxt_t = torch.tensor(nxt, device=dev)[alive]
    pos_t = torch.tensor(next_pos, device=dev)[alive][:, None]
    while len(alive) and not all(finished[r] for r in alive.tolist()):
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
        out, cache = cached_forward(lm, nxt_t[:, None], mask, pos_t, cache)
        tokens = lm.adapter.logits(out.last_hidden_state[:, -1]).argmax(-1)
        keep = []
        for i, (r, tok) in enumerate(zip(alive.tolist(), tokens.tolist())):
            if finished[r]:
                continue
            gen[r, count[r]] = tok
            count[r] += 1
            if tok in eos or count[r] >= want[r]:
                finished[r] = True
            else:
                keep.append(i)
        if not keep:
            break
        if len(keep) < len(alive) and hasattr(cache, "batch_select_indices"):
            sel = torch.tensor(keep, device=dev)
            cache.batch_select_indices(sel)
            alive, mask, tokens, pos_t = alive[sel], mask[sel], tokens[sel], pos_t[sel]
        nxt_t = tokens
        pos_t = pos_t + 1
    return gen
