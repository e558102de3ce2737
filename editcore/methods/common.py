"""What the locate-then-edit methods share about *where* a fact is read: prompts, the subject's last token,
context prefixes and the MLP keys there.

* :func:`subject_last_index` — where a fact is looked up: the subject's last token (ROME/MEMIT's
  ``fact_token = subject_last``).
* :func:`context_templates` — ``"{prefix}. {}"`` prompts with short prefixes sampled from the model, so keys
  and values are averaged over a few contexts as in ROME; sampled once per model with a fixed seed and kept on
  disk, so an edit is reproducible.
* :func:`module_io_at` / :func:`mlp_keys` — a module's input or output at given positions; the MLP *key* is
  the input of the MLP output projection (for gated MLPs ``act(gate(x)) * up(x)``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Sequence

import torch

from .. import hooks, paths
from ..errors import InputError
from ..text import check_length, final_hidden, padded, prompt_ids, rewritten, target_ids
from ..types import Request

log = logging.getLogger(__name__)

# ROME's prompts for sampling context prefixes (rome/rome_main.py uses these five).
_PREFIX_SEEDS = ("The", "Therefore", "Because", "I", "You")


def fill(template: str, subject: str) -> str:
    """``template`` with its ``{}`` replaced by ``subject`` (``str.format`` would choke on other braces)."""
    return template.replace("{}", subject, 1)


def validate_request(lm, req: Request) -> Request:
    """Request checks every method shares; raises :class:`InputError` with a one-line message."""
    if not isinstance(req, Request):
        raise InputError(f"expected a Request, got {type(req).__name__}")
    req.validate()
    target_ids(lm.tokenizer, req.target_new)  # empty / untokenisable target
    check_length(lm, len(prompt_ids(lm.tokenizer, req.text)) + len(target_ids(lm.tokenizer, req.target_new)))
    return req


def validate_requests(lm, requests: Sequence[Request], one_at_a_time: str | None = None) -> list[Request]:
    """Every request checked (:func:`validate_request`); at least one, and exactly one when the method named by
    ``one_at_a_time`` edits a single fact per call."""
    if not requests:
        raise InputError("no edit requests given")
    if one_at_a_time and len(requests) != 1:
        raise InputError(f"{one_at_a_time} edits one fact at a time (got {len(requests)}); use MEMIT for batches")
    return [validate_request(lm, r) for r in requests]


def subject_last_index(tokenizer, template: str, subject: str) -> tuple[list[int], int]:
    """Token ids of ``template`` filled with ``subject`` (as the model sees it: after any active input
    rewrite, which only ever puts text before the prompt) and the index of the subject's last token."""
    text = fill(template, subject)
    seen = rewritten(tokenizer, text)
    if not seen.endswith(text):
        raise InputError("an input rewrite changed the prompt itself; the subject cannot be located")
    before = seen[:len(seen) - len(text)]
    head_text = before + template.split("{}", 1)[0] + subject
    ids = list(tokenizer(seen, add_special_tokens=True)["input_ids"])
    head = list(tokenizer(head_text, add_special_tokens=True)["input_ids"])
    # Special tokens appended at the end (EOS) would make ``head`` longer than the real prefix.
    while head and len(head) > len(ids):
        head = head[:-1]
    if ids[: len(head)] == head and head:
        return ids, len(head) - 1
    # The subject merged with the following text into one token: find the last token that starts inside
    # the subject using character offsets (fast tokenizers only).
    try:
        enc = tokenizer(seen, add_special_tokens=True, return_offsets_mapping=True)
        offsets = enc["offset_mapping"]
        idx = max(i for i, (s, e) in enumerate(offsets) if e > s and s < len(head_text))
        return list(enc["input_ids"]), idx
    except (ValueError, KeyError, NotImplementedError, TypeError):
        raise InputError(f"cannot locate the subject {subject!r} in the tokenised prompt") from None


def context_rows(lm, requests: Sequence[Request], templates: Sequence[str]) -> tuple[list[list[int]], list[int]]:
    """Token ids of every (request, template) prompt, request by request, and the subject's last token in each."""
    seqs, idxs = [], []
    for req in requests:
        for ctx in templates:
            ids, idx = subject_last_index(lm.tokenizer, fill(ctx, req.prompt), req.subject)
            seqs.append(ids)
            idxs.append(idx)
    return seqs, idxs


# ---- context templates ----------------------------------------------------------------------------
def context_templates(lm, n: int, length: int, seed: int = 0) -> list[str]:
    """``["{}", "<prefix 1>. {}", ...]``: ``n`` prefixes of ``length`` new tokens sampled from the model.

    ROME samples them (top-k 5) on every run; here they are sampled once per (model fingerprint, n, length,
    seed) and kept on disk."""
    if n <= 0:
        return ["{}"]
    key = {"fingerprint": lm.fingerprint, "n": n, "length": length, "seed": seed, "v": 1}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    path = paths.sub("context") / f"{digest}.json"
    if path.is_file():
        try:
            prefixes = json.loads(path.read_text())["prefixes"]
            if len(prefixes) == n:
                return ["{}"] + [f"{p}. {{}}" for p in prefixes]
        except (ValueError, KeyError):
            log.warning("ignoring unreadable context cache %s", path)
    prefixes = _sample_prefixes(lm, n, length, seed)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"key": key, "prefixes": prefixes}))
    tmp.replace(path)
    return ["{}"] + [f"{p}. {{}}" for p in prefixes]


# How the reference code samples its prefixes: (starts, [(max_len, count), ...]). ``max_len`` counts every token
# of the sequence, the start included, as ``generate_fast``'s ``max_out_len`` does. ROME
# (``context_template_length_params``): from the start-of-text token, 10 of length 5 and 10 of length 10.
# MEMIT (``get_context_templates``): one of length 10 from each of five seed words.
_REFERENCE_CONTEXTS = {"rome": (None, [(5, 10), (10, 10)]), "memit": (_PREFIX_SEEDS, [(10, 5)])}


def reference_context_templates(lm, style: str, seed: int = 0) -> list[str]:
    """``["{}", "<prefix>. {}", ...]`` as ROME's or MEMIT's code builds them (top-k 5 sampling; see
    :data:`_REFERENCE_CONTEXTS`). The reference samples anew in every process; here they are sampled once per
    (model, style, seed) and kept on disk, like :func:`context_templates`."""
    if style not in _REFERENCE_CONTEXTS:
        raise InputError(f"unknown context style {style!r}; use one of {', '.join(_REFERENCE_CONTEXTS)}")
    key = {"fingerprint": lm.fingerprint, "style": style, "seed": seed, "v": 1}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    path = paths.sub("context") / f"{digest}.json"
    if path.is_file():
        try:
            return ["{}"] + [f"{p}. {{}}" for p in json.loads(path.read_text())["prefixes"]]
        except (ValueError, KeyError):
            log.warning("ignoring unreadable context cache %s", path)
    starts, lengths = _REFERENCE_CONTEXTS[style]
    tok = lm.tokenizer
    prefixes: list[str] = []
    for i, (max_len, count) in enumerate(lengths):
        for j in range(count):
            if starts is None:  # the start-of-text token alone (GPT-2's <|endoftext|>)
                start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
                ids, text = [start], ""
            else:
                text = starts[j % len(starts)]
                ids = prompt_ids(tok, text)
            n_special = sum(1 for t in ids if t in tok.all_special_ids)
            new = max(1, max_len - (len(ids) - n_special))
            # Distinct prefixes: a repeat (likely only from tiny random models) is drawn again; the value
            # engine's shared-prefix replay expects one row per distinct context.
            for attempt in range(8):
                got = _sample(lm, ids, new, seed * 1000 + i * 100 + j + 7919 * attempt) or text or "The"
                if got not in prefixes:
                    break
            else:
                got = f"{got} {len(prefixes)}"
            prefixes.append(got)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"key": key, "prefixes": prefixes}))
    tmp.replace(path)
    return ["{}"] + [f"{p}. {{}}" for p in prefixes]


@torch.no_grad()
def _sample(lm, ids: list[int], new_tokens: int, seed: int) -> str:
    """``ids`` continued by ``new_tokens`` top-k 5 samples, decoded without special tokens, on one line and
    without braces (they would read as the subject slot)."""
    tok = lm.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    devices = [lm.device] if lm.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        x = torch.tensor([ids], device=lm.device)
        gen = lm.model.generate(input_ids=x, attention_mask=torch.ones_like(x), do_sample=True, top_k=5,
                                max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=pad)
    text = tok.decode(gen[0], skip_special_tokens=True)
    return " ".join(text.replace("{", " ").replace("}", " ").split())


@torch.no_grad()
def _sample_prefixes(lm, n: int, length: int, seed: int) -> list[str]:
    tok = lm.tokenizer
    out: list[str] = []
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    # fork_rng keeps the caller's global RNG untouched; the seed makes the prefixes reproducible.
    devices = [lm.device] if lm.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for i in range(n):
            start = _PREFIX_SEEDS[i % len(_PREFIX_SEEDS)]
            ids = torch.tensor([prompt_ids(tok, start)], device=lm.device)
            gen = lm.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, top_k=5,
                                    max_new_tokens=length, min_new_tokens=length, pad_token_id=pad)
            text = tok.decode(gen[0], skip_special_tokens=True)
            # Braces would be read as the subject slot; newlines make odd prompts.
            text = " ".join(text.replace("{", " ").replace("}", " ").split())
            out.append(text or start)
    return out


# ---- reading activations ----------------------------------------------------------------------------
def stopped_at(lm, module: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, which: str) -> torch.Tensor:
    """A plain forward (no cache) of ``ids`` that stops at ``module``: its input (``which="in"``, first
    positional argument) or output ``[n, T, ...]``."""
    return hooks.run_until(module, lambda: lm.model.base_model(input_ids=ids, attention_mask=mask, use_cache=False),
                           which)


@torch.no_grad()
def module_io_at(lm, slot: str, layer: int, seqs: Sequence[Sequence[int]], idxs: Sequence[int],
                 which: str = "in") -> torch.Tensor:
    """Input (``which="in"``, first positional argument) or output of ``slot`` at layer ``layer`` for each
    sequence at its position ``idxs[i]``: ``[n, d]`` in float32. The forward stops right after it."""
    # Causal: nothing after position idx reaches it, so each sequence ends there.
    ids, mask = padded(lm, [list(q[:i + 1]) for q, i in zip(seqs, idxs)])
    x = stopped_at(lm, lm.adapter.module(slot, layer), ids, mask, which)
    rows = torch.arange(len(seqs), device=ids.device)
    return x[rows, torch.tensor(list(idxs), device=ids.device)].float()


def plain_hidden(lm, seqs: Sequence[Sequence[int]], block: int) -> torch.Tensor:
    """Right-padded plain forward (no cache) of ``seqs``: the input of block ``block`` ``[n, T, d]``, the pass
    stopping there, or the final-normed hidden states when ``block`` is past the last block."""
    ids, mask = padded(lm, seqs)
    if block >= lm.adapter.n_layers:
        return final_hidden(lm.model.base_model(input_ids=ids, attention_mask=mask, use_cache=False))
    return stopped_at(lm, lm.adapter.block(block), ids, mask, "in")


def mlp_keys(lm, layer: int, requests: Sequence[Request], templates: Sequence[str],
             batch_size: int = 32) -> torch.Tensor:
    """MLP keys ``[n_requests, d_mlp]`` at the subject's last token, averaged over ``templates``
    (each template is a context with a ``{}`` where the request's prompt goes)."""
    seqs, idxs = context_rows(lm, requests, templates)
    keys = torch.cat([module_io_at(lm, "mlp_out", layer, seqs[i:i + batch_size], idxs[i:i + batch_size])
                      for i in range(0, len(seqs), batch_size)])
    return keys.view(len(requests), len(templates), -1).mean(1)


def agrees(ref: torch.Tensor, got: torch.Tensor, what: str, fallback: str) -> bool:
    """A fast path's hidden states equal a plain forward's (to float32 rounding); logs when they do not."""
    ref, got = ref.detach().float(), got.detach().float()
    err = float((ref - got).abs().max())
    tol = 1e-3 * max(1.0, float(ref.abs().max()))
    if not math.isfinite(err) or err > tol:
        log.warning("%s differs from a full forward (max err %.2e); %s", what, err, fallback)
        return False
    return True


def take_rows(x, idx: torch.Tensor, n: int):
    """``x`` with every tensor of batch size ``n`` (2-D or more, first dimension ``n``) cut to rows ``idx``;
    containers are rebuilt, anything else (a cache object, flags) is passed through."""
    if isinstance(x, torch.Tensor):
        return x[idx] if x.dim() >= 2 and x.shape[0] == n else x
    if isinstance(x, dict):
        return {k: take_rows(v, idx, n) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        items = [take_rows(v, idx, n) for v in x]
        return type(x)(*items) if hasattr(x, "_fields") else type(x)(items)
    return x
