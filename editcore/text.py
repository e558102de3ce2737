"""Tokenisation rules and teacher-forced scoring, shared by every method and metric.

Rules (fixed here once so no method drifts):

* a *prompt* is encoded with the model's special tokens (Gemma needs its ``<bos>``);
* a *target* is encoded with a leading space and **without** special tokens (training on a second
  ``<bos>`` in the middle of a sentence is what breaks EasyEdit's FT on Gemma);
* the probability of a multi-token target is the product of its tokens' probabilities, teacher-forced
  after the prompt.

Batches are right-padded for scoring (positions stay 0..n-1 for real tokens) and left-padded for
generation. Logits are computed only at the positions that are scored: Gemma's vocabulary has 262k
entries, so full-sequence logits would dominate time and memory.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .errors import InputError

log = logging.getLogger(__name__)


# Input rewrites of the patches applied now (IKE's demonstrations, SERAC's retrieved edit): ``(tokenizer, fn)``
# pairs, oldest first. A context variable, so a rewrite is seen only by the thread (the browser session) whose
# scope applied it, and only for the model whose tokenizer it names.
_REWRITES: contextvars.ContextVar[tuple] = contextvars.ContextVar("editscope_rewrites", default=())


@contextlib.contextmanager
def rewriting(tokenizer, fn):
    """Every prompt encoded for ``tokenizer`` inside the block is ``fn(prompt)`` first (see
    :attr:`editcore.scope.Patch.rewrite`). The edit scope enters this; nothing else should."""
    token = _REWRITES.set(_REWRITES.get() + ((tokenizer, fn),))
    try:
        yield
    finally:
        _REWRITES.reset(token)


def rewritten(tokenizer, text: str) -> str:
    """``text`` as the model behind ``tokenizer`` sees it now (after every active input rewrite)."""
    for tok, fn in _REWRITES.get():
        if tok is tokenizer:
            text = fn(text)
    return text


def active_rewrites(tokenizer) -> tuple:
    """The input rewrites active now for ``tokenizer``, oldest first (a method that keeps a memory across
    sequential edits, IKE's facts or SERAC's edits, finds the earlier patches' memories here)."""
    return tuple(fn for tok, fn in _REWRITES.get() if tok is tokenizer)


def prompt_ids(tokenizer, text: str) -> list[int]:
    """Token ids of a prompt as the model sees it: special tokens added, active input rewrites applied."""
    return list(tokenizer(rewritten(tokenizer, text), add_special_tokens=True)["input_ids"])


def target_ids(tokenizer, target: str) -> list[int]:
    if not target or not target.strip():
        raise InputError("the target is empty")
    text = target if target.startswith(" ") else " " + target
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if not ids:
        raise InputError(f"the target {target!r} encodes to no tokens")
    return ids


def context_length(lm) -> int:
    cfg = lm.model.config
    for key in ("max_position_embeddings", "n_positions", "n_ctx"):
        v = getattr(cfg, key, None)
        if isinstance(v, int) and v > 0:
            return v
    return 2048


def check_length(lm, n_tokens: int, what: str = "prompt + target") -> None:
    limit = context_length(lm)
    if n_tokens > limit:
        raise InputError(f"the {what} is {n_tokens} tokens, over this model's context of {limit}")


@dataclass
class TargetScore:
    """Teacher-forced scores of one target after one prompt."""

    token_logprobs: list[float]  # log P(t_i | prompt, t_<i)
    token_correct: list[bool]  # argmax at each position equals t_i (EasyEdit's token accuracy)

    @property
    def logprob(self) -> float:
        return float(sum(self.token_logprobs))

    @property
    def mean_nll(self) -> float:
        return -float(sum(self.token_logprobs)) / len(self.token_logprobs)


def model_device(lm) -> torch.device:
    return next(lm.model.parameters()).device


def pad_id(tokenizer) -> int:
    for cand in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if cand is not None:
            return int(cand)
    return 0


def padded(lm, seqs: Sequence[Sequence[int]], left: bool = False, width: int | None = None,
           offsets: Sequence[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids, attention mask)`` of token sequences padded to one width with :func:`pad_id`: on the right,
    or on the ``left`` (what generation and cached prefixes need); ``offsets[i]`` puts row ``i`` at that
    column instead (its own alignment, e.g. the subject's last token in one column)."""
    dev = model_device(lm)
    width = width or max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id(lm.tokenizer), dtype=torch.long, device=dev)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(seqs):
        start = offsets[i] if offsets is not None else (width - len(s) if left else 0)
        ids[i, start:start + len(s)] = torch.tensor(list(s), device=dev)
        mask[i, start:start + len(s)] = 1
    return ids, mask


def final_hidden(out) -> torch.Tensor:
    """The final-normed hidden states of a ``base_model`` output (a ModelOutput or a plain tuple)."""
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]


@torch.no_grad()
def hidden_at(lm, seqs: Sequence[Sequence[int]], positions: Sequence[Sequence[int]]) -> list[torch.Tensor]:
    """Final-normed hidden states of each right-padded sequence at the requested positions."""
    ids, mask = padded(lm, seqs)
    h = final_hidden(lm.model.base_model(input_ids=ids, attention_mask=mask, use_cache=False))
    return [h[i, list(pos)] for i, pos in enumerate(positions)]


def batches(n: int, size: int):
    for start in range(0, n, size):
        yield range(start, min(n, start + size))


@torch.no_grad()
def score_targets(lm, prompts: Sequence[str], targets: Sequence[str], batch_size: int = 16) -> list[TargetScore]:
    """Teacher-forced per-token scores of ``targets[i]`` after ``prompts[i]``."""
    if len(prompts) != len(targets):
        raise ValueError("prompts and targets differ in length")
    tok = lm.tokenizer
    encoded = [(prompt_ids(tok, p), target_ids(tok, t)) for p, t in zip(prompts, targets)]
    results: list[TargetScore] = []
    for (lp, am), (_, t) in zip(pair_logprobs(lm, encoded, batch_size), encoded):
        results.append(TargetScore(lp.tolist(), (am == torch.tensor(t)).tolist()))
    return results


@torch.no_grad()
def pair_logprobs(lm, encoded: Sequence[tuple[list[int], list[int]]],
                  batch_size: int = 16) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """For (prompt ids, target ids) pairs: the log-probability of each target token after its prompt and
    the previous target tokens (teacher forced), and the argmax token at each of those positions.

    The last target token is never an input, so a pair needs the sequence ``prompt + target[:-1]``, and a
    causal model gives the same states for a sequence's prefix whatever follows it. Pairs whose sequence is
    a prefix of another pair's (every single-token target after the same prompt: P(new) and P(true) on a
    CounterFact prompt, both sentiment labels, ...) are read from that one sequence, which halves the work
    of most metrics without changing a number."""
    return pairs_and_dists(lm, encoded, (), batch_size)[0]


def pairs_and_dists(lm, encoded: Sequence[tuple[list[int], list[int]]], dist_prompts: Sequence[list[int]],
                    batch_size: int = 16) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
    """:func:`pair_logprobs` for ``encoded``, and the full next-token log-distribution ``[n, vocab]`` (float32,
    CPU) at the end of each of ``dist_prompts`` from the same passes: a prompt that is also scored with a
    target is a prefix of that pair's sequence, so its distribution costs one more row of logits instead of
    a forward pass of its own (the metrics read NKL and probability shifts on the prompts they score)."""
    entries = [(list(p), list(t)) for p, t in encoded] + [(list(p), None) for p in dist_prompts]
    need = []
    for p, t in entries:
        if t is None:
            check_length(lm, len(p), "prompt")
            need.append(tuple(p))
        else:
            check_length(lm, len(p) + len(t))
            need.append(tuple(p + t[:-1]))
    # Each distinct sequence is read from a longest sequence it is a prefix of. In lexicographic order the
    # sequences that extend q come right after q, so one backward pass finds every host.
    uniq = sorted(set(need))
    host_of: dict[tuple, tuple] = {}
    hosts: list[tuple] = []
    for j in range(len(uniq) - 1, -1, -1):
        q = uniq[j]
        if j + 1 < len(uniq) and uniq[j + 1][:len(q)] == q:
            host_of[q] = host_of[uniq[j + 1]]
        else:
            host_of[q] = q
            hosts.append(q)
    index = {h: i for i, h in enumerate(hosts)}
    host_idx = [index[host_of[q]] for q in need]  # which host sequence each pair is read from
    # Pairs in host order: each host's rows are read at its pairs' positions, in this order.
    order = sorted(range(len(entries)), key=host_idx.__getitem__)
    positions = [[] for _ in hosts]
    for k in order:
        p, t = entries[k]
        positions[host_idx[k]].extend(range(len(p) - 1, len(p) + len(t) - 1) if t is not None else [len(p) - 1])
    states: list[torch.Tensor | None] = [None] * len(hosts)
    groups, alone = _shared_prefix_groups(hosts)
    for chunk in _padding_aware_chunks(groups, hosts, 4 * batch_size):
        try:
            got = hidden_at_shared(lm, [(hosts[m[0]][:n], [hosts[i] for i in m]) for n, m in chunk],
                                   [[positions[i] for i in m] for _, m in chunk])
        except Exception as exc:  # a family whose cache cannot be shared: plain passes give the same numbers
            log.info("shared-prefix scoring unavailable for %s (%s)", lm.adapter.family, exc)
            alone += [i for _, m in chunk for i in m]
            continue
        for (_, m), hs in zip(chunk, got):
            for i, h in zip(m, hs):
                states[i] = h
    alone.sort(key=lambda i: len(hosts[i]))  # batches of similar length waste less on padding
    for idx in batches(len(alone), batch_size):
        members = [alone[j] for j in idx]
        for i, h in zip(members, hidden_at(lm, [list(hosts[i]) for i in members], [positions[i] for i in members])):
            states[i] = h
    # A pair's rows each predict one target token: its log-probability is logit - logsumexp(logits), without
    # writing out the whole log-distribution (262k floats a row on Gemma); only distribution rows keep theirs.
    flat = torch.cat([states[i] for i in range(len(hosts))]) if hosts else torch.empty(0)
    labels = torch.tensor([x for k in order for x in (entries[k][1] if entries[k][1] is not None else [0])],
                          device=flat.device)
    dist_row = torch.tensor([entries[k][1] is None for k in order for _ in (entries[k][1] or [0])],
                            dtype=torch.bool)
    lps, ams, dists = [], [], []
    for start in range(0, flat.shape[0], 64):
        logits = lm.adapter.logits(flat[start:start + 64]).float()
        lse = torch.logsumexp(logits, dim=-1)
        lps.append((logits.gather(1, labels[start:start + 64, None])[:, 0] - lse).cpu())
        ams.append(logits.argmax(-1).cpu())
        here = dist_row[start:start + 64].to(logits.device)
        if bool(here.any()):
            dists.append((logits[here] - lse[here, None]).cpu())
    lp_all = torch.cat(lps) if lps else torch.empty(0)
    am_all = torch.cat(ams) if ams else torch.empty(0, dtype=torch.long)
    dist_all = torch.cat(dists) if dists else torch.empty(0, 0)
    out: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(encoded)
    dist_out: list[torch.Tensor | None] = [None] * len(dist_prompts)
    used = used_d = 0
    for k in order:
        t = entries[k][1]
        if t is None:
            dist_out[k - len(encoded)] = dist_all[used_d]
            used_d += 1
            used += 1
        else:
            out[k] = (lp_all[used:used + len(t)], am_all[used:used + len(t)])
            used += len(t)
    return out, (torch.stack(dist_out) if dist_out else torch.empty(0, 0))


# Sequences sharing a prefix of at least SHARED_PREFIX_MIN_TOKENS run it once, if that saves at least
# SHARED_PREFIX_MIN_SAVING token positions (below that, the extra forward call costs more than it saves).
SHARED_PREFIX_MIN_TOKENS = 6
SHARED_PREFIX_MIN_SAVING = 24


def _shared_prefix_groups(seqs: Sequence[tuple]) -> tuple[list[tuple[int, list[int]]], list[int]]:
    """Group sequences that share a long prefix: ``([(prefix length, member indices)], [the rest])``.

    In lexicographic order sequences sharing a prefix are adjacent; a run continues while neighbours share
    at least :data:`SHARED_PREFIX_MIN_TOKENS` tokens, and its prefix is the shortest of those shared parts,
    kept shorter than every member (so each member has tokens of its own to run)."""
    order = sorted(range(len(seqs)), key=lambda i: seqs[i])
    groups: list[tuple[int, list[int]]] = []
    alone: list[int] = []
    run: list[int] = []
    n = 0

    def close() -> None:
        if len(run) > 1 and (len(run) - 1) * n >= SHARED_PREFIX_MIN_SAVING:
            groups.append((n, list(run)))
        else:
            alone.extend(run)

    for i in order:
        if run:
            a, b = seqs[run[-1]], seqs[i]
            limit = min(len(a), len(b)) - 1
            common = 0
            while common < limit and a[common] == b[common]:
                common += 1
            if common >= SHARED_PREFIX_MIN_TOKENS:
                run.append(i)
                n = min(n, common)
                continue
            close()
        run, n = [i], len(seqs[i]) - 1
    if run:
        close()
    return groups, alone


def _padding_aware_chunks(groups: list[tuple[int, list[int]]], seqs: Sequence[tuple], max_rows: int):
    """Groups for one :func:`hidden_at_shared` call each: sorted by the length of their members' own parts,
    a chunk takes the next group while the right-padded batch stays at most ~1.3x its real tokens (few-shot
    items of 40 tokens and one-token targets in one batch would mostly compute padding)."""
    def rest(g):
        n, members = g
        return [len(seqs[i]) - n for i in members]

    chunk: list = []
    real = rows = width = 0
    for g in sorted(groups, key=lambda g: max(rest(g))):
        r = rest(g)
        w = max(width, max(r))
        if chunk and ((rows + len(r)) * w > 1.3 * (real + sum(r)) + 64 or rows + len(r) > max_rows):
            yield chunk
            chunk, real, rows, w = [], 0, 0, max(r)
        chunk.append(g)
        real, rows, width = real + sum(r), rows + len(r), w
    if chunk:
        yield chunk


@torch.no_grad()
def hidden_at_shared(lm, groups: Sequence[tuple[Sequence[int], Sequence[Sequence[int]]]],
                     positions: Sequence[Sequence[Sequence[int]]]) -> list[list[torch.Tensor]]:
    """:func:`hidden_at` for groups of sequences sharing a prefix: ``groups[g] = (prefix, members)``.

    Every prefix runs once (one left-padded batch, explicit position ids) and fills a key/value cache; the
    cache rows are repeated for each group's members, whose remaining tokens then run in one right-padded
    batch. A causal model gives every position the same state as a plain forward of the whole sequence
    (tested against plain passes on every supported family). ``positions[g][j]`` are positions in member
    ``j`` of group ``g``; they may fall inside the prefix."""
    dev = model_device(lm)
    prefixes = [list(p) for p, _ in groups]
    ids, mask = padded(lm, prefixes, left=True)
    wp = ids.shape[1]
    out, cache = cached_forward(lm, ids, mask, position_ids(mask))
    h_pre = out.last_hidden_state
    owner = [g for g, (_, members) in enumerate(groups) for _ in members]
    if not hasattr(cache, "batch_select_indices"):
        raise RuntimeError("the key/value cache cannot repeat rows")
    cache.batch_select_indices(torch.tensor(owner, device=dev))
    rests = [list(m)[len(prefixes[g]):] for g, (_, members) in enumerate(groups) for m in members]
    sids, smask = padded(lm, rests)
    ws = sids.shape[1]
    start = torch.tensor([len(prefixes[g]) for g in owner], device=dev)
    spos = start[:, None] + torch.arange(ws, device=dev)[None, :]
    out2, _ = cached_forward(lm, sids, torch.cat([mask[owner], smask], 1), spos, cache)
    h_rest = out2.last_hidden_state
    result: list[list[torch.Tensor]] = []
    r = 0
    for g, (_, members) in enumerate(groups):
        n, off = len(prefixes[g]), wp - len(prefixes[g])
        got = []
        for j in range(len(members)):
            pos = list(positions[g][j])
            rows = [h_pre[g, off + q] if q < n else h_rest[r, q - n] for q in pos]
            got.append(torch.stack(rows) if rows else h_rest.new_zeros(0, h_rest.shape[-1]))
            r += 1
        result.append(got)
    return result


def split_logprobs(lm, hs: Sequence[torch.Tensor], chunk: int = 64) -> list[torch.Tensor]:
    """Log-softmax next-token distributions for a list of ``[n_i, d]`` hidden states, with the rows of all of
    them sent through the unembedding together (in chunks of ``chunk`` rows): on CPU each call reads the
    whole matrix (670 MB for Gemma's 262k vocabulary), so one call per batch instead of one per sequence."""
    if not hs:
        return []
    flat = torch.cat(list(hs))
    parts = [torch.log_softmax(lm.adapter.logits(flat[i:i + chunk]).float(), dim=-1)
             for i in range(0, flat.shape[0], chunk)]
    return list(torch.cat(parts).split([h.shape[0] for h in hs]))


def target_logprobs(lm, prompts: Sequence[str], targets: Sequence[str], batch_size: int = 16) -> torch.Tensor:
    """Sum of token log-probabilities of each target after its prompt (log of the product)."""
    return torch.tensor([s.logprob for s in score_targets(lm, prompts, targets, batch_size)])


@torch.no_grad()
def next_token_logprobs(lm, prompts: Sequence[str], batch_size: int = 16) -> torch.Tensor:
    """Full next-token log-distribution ``[n, vocab]`` (float32, on CPU) at the end of each prompt."""
    tok = lm.tokenizer
    encoded = [prompt_ids(tok, p) for p in prompts]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))  # similar lengths share a batch
    rows: list[torch.Tensor | None] = [None] * len(encoded)
    for idx in batches(len(order), batch_size):
        members = [order[i] for i in idx]
        seqs = [encoded[i] for i in members]
        for s in seqs:
            check_length(lm, len(s), "prompt")
        hs = hidden_at(lm, seqs, [[len(s) - 1] for s in seqs])
        for i, lp in zip(members, split_logprobs(lm, hs)):
            rows[i] = lp[0].cpu()
    return torch.stack(rows) if rows else torch.empty(0)


def position_ids(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that skip left padding (what a model without padding would see)."""
    return (mask.cumsum(1) - 1).clamp_min(0)


def cached_forward(lm, ids: torch.Tensor, mask: torch.Tensor | None, positions: torch.Tensor | None, cache=None):
    """``base_model`` forward with a key/value cache: ``(output, cache)``. ``cache=None`` starts one; a given
    cache is extended in place. ``mask``/``positions`` of None are not passed (one unpadded row needs
    neither). transformers 5 names the argument and the output ``cache`` (``past_key_values`` is deprecated
    there); older versions use ``past_key_values``."""
    base = lm.model.base_model
    kwargs = {}
    if mask is not None:
        kwargs["attention_mask"] = mask
    if positions is not None:
        kwargs["position_ids"] = positions
    if cache is not None:
        name = "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"
        kwargs[name] = cache
    out = base(input_ids=ids, use_cache=True, **kwargs)
    got = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
    if got is None:
        raise RuntimeError("the model returned no key/value cache")
    return out, got
