"""The two runs every causal trace starts from: the clean prompt and its noised copies.

:func:`prepare` tokenises the prompt, finds the subject's tokens, runs the clean prompt once (keeping every
block's output, every MLP output and every attention output: the states a restoration puts back) and then
the ``samples`` corrupted copies, whose subject embeddings get Gaussian noise. The corrupted copies run one
position at a time with a key/value cache, so that the cache holding positions ``[0, t)`` can be kept for
every ``t``: a restoration at token ``t`` leaves everything before ``t`` as it was in the corrupted run, and
the replay (:mod:`editcore.tracing.replay`) then only recomputes positions ``t..T-1``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .. import hooks
from ..errors import InputError
from ..methods.common import fill, subject_last_index
from ..text import cached_forward, check_length, rewritten, target_ids
from .settings import TraceSettings

MAX_TOKENS = 96  # a trace costs ~ tokens^2 x layers; longer prompts belong to a GPU


def subject_span(tokenizer, template: str, subject: str) -> tuple[list[int], int, int]:
    """Token ids of ``template`` filled with ``subject`` (after any active input rewrite) and the subject's
    tokens ``[start, end)``: every token that overlaps the subject's characters."""
    if template.count("{}") != 1:
        raise InputError("the prompt must hold the subject once, as '{}'")
    if not subject or not subject.strip():
        raise InputError("the subject is empty")
    ids, last = subject_last_index(tokenizer, template, subject)
    text = fill(template, subject)
    seen = rewritten(tokenizer, text)
    first_char = len(seen) - len(text) + template.index("{}")
    end_char = first_char + len(subject)
    try:
        enc = tokenizer(seen, add_special_tokens=True, return_offsets_mapping=True)
        inside = [i for i, (s, e) in enumerate(enc["offset_mapping"]) if e > s and s < end_char and e > first_char]
        if list(enc["input_ids"]) == ids and inside:
            return ids, inside[0], last + 1
    except (ValueError, KeyError, NotImplementedError, TypeError):
        pass
    # Slow tokenizers: the subject starts where the text before it ends.
    head = list(tokenizer(seen[:first_char], add_special_tokens=True)["input_ids"])
    start = len(head) if ids[:len(head)] == head else last
    return ids, min(start, last), last + 1


@dataclass
class Prepared:
    """Everything a trace of one prompt needs, on the model's device."""

    ids: list[int]
    s0: int  # the subject's tokens are [s0, s1)
    s1: int
    answer_id: int
    settings: TraceSettings
    noise: torch.Tensor  # [samples, s1 - s0, d]: what is added to the subject's embeddings
    clean: dict[str, torch.Tensor]  # kind -> [L, T, d]: block outputs, MLP outputs, attention outputs
    high: float  # P(answer) on the clean prompt
    corrupt_in: list[torch.Tensor]  # j -> [samples, T, d]: input of block j (j = L: of the final norm)
    low_rows: torch.Tensor  # [samples]: P(answer) of each corrupted copy
    corrupt_final: torch.Tensor  # [samples, d]: their final-normed state at the last token
    prefix_states: dict[int, list[dict] | None] = field(default_factory=dict)  # t -> cache layer states
    cache: object = None  # the corrupted run's cache object (its layers are re-filled from prefix_states)

    @property
    def T(self) -> int:
        return len(self.ids)

    @property
    def low(self) -> float:
        return float(self.low_rows.mean())


def answer_prob(lm, final: torch.Tensor, answer_id: int, chunk: int = 128) -> torch.Tensor:
    """P(answer) from final-normed states ``[n, d]`` (float32, on CPU), unembedded ``chunk`` rows at a time."""
    out = []
    for part in final.split(chunk):
        logits = lm.adapter.logits(part).float()
        out.append((logits[:, answer_id] - torch.logsumexp(logits, -1)).exp().cpu())
    return torch.cat(out) if out else torch.empty(0)


def draw_noise(settings: TraceSettings, n_tokens: int, d: int, std: float) -> torch.Tensor:
    """``[samples, n_tokens, d]`` Gaussian noise of standard deviation ``settings.noise * std``, drawn on the CPU
    from the settings' seed (so a trace is the same on every device)."""
    g = torch.Generator().manual_seed(settings.seed)
    return torch.randn(settings.samples, n_tokens, d, generator=g, dtype=torch.float32) * (settings.noise * std)


@torch.no_grad()
def prepare(lm, template: str, subject: str, answer: str, settings: TraceSettings, noise_std: float) -> Prepared:
    settings.validate()
    ad = lm.adapter
    ids, s0, s1 = subject_span(lm.tokenizer, template, subject)
    T = len(ids)
    check_length(lm, T, "prompt")
    if T > MAX_TOKENS:
        raise InputError(f"the prompt is {T} tokens; causal tracing takes prompts of at most {MAX_TOKENS}")
    answer_id = target_ids(lm.tokenizer, answer)[0]
    dev = lm.device
    blocks = [ad.block(j) for j in range(ad.n_layers)]
    final_norm = ad.module("final_norm")

    # The clean run: the states a restoration puts back.
    got: dict[str, list] = {k: [None] * ad.n_layers for k in ("hidden", "mlp", "attn")}

    def keep(kind, j):
        return lambda _a, out: got[kind].__setitem__(j, hooks.first(out)[0].detach())

    points = [(blocks[j], keep("hidden", j)) for j in range(ad.n_layers)]
    points += [(ad.module("mlp", j), keep("mlp", j)) for j in range(ad.n_layers)]
    points += [(ad.module("attn_out", j), keep("attn", j)) for j in range(ad.n_layers)]
    x = torch.tensor([ids], device=dev)
    with hooks.together(hooks.on_output(m, fn) for m, fn in points):
        out = lm.model.base_model(input_ids=x, use_cache=False)
    clean = {k: torch.stack(v) for k, v in got.items()}
    high = float(answer_prob(lm, out.last_hidden_state[:, -1], answer_id)[0])

    # The corrupted copies, one position at a time from the subject on, keeping the cache before each.
    S = settings.samples
    noise = draw_noise(settings, s1 - s0, ad.d_model, noise_std).to(dev)
    inputs: list[list[torch.Tensor]] = [[] for _ in range(ad.n_layers + 1)]
    at = {"pos": 0}

    def add_noise(_a, emb):
        h = hooks.first(emb)
        lo, hi = max(s0, at["pos"]), min(s1, at["pos"] + h.shape[1])
        if lo < hi:
            h = h.clone()
            h[:, lo - at["pos"]:hi - at["pos"]] += noise[:, lo - s0:hi - s0].to(h.dtype)
            return hooks.replace_hidden(emb, h)
        return None

    def keep_in(j):
        return lambda args: inputs[j].append(args[0].detach())

    xs = x.expand(S, T)
    states: dict[int, list[dict] | None] = {0: None}
    cache = None
    with hooks.on_output(ad.module("embed"), add_noise), \
            hooks.together(hooks.on_input(m, keep_in(j)) for j, m in enumerate([*blocks, final_norm])):
        steps = ([(0, s0)] if s0 > 0 else []) + [(p, p + 1) for p in range(s0, T)]
        for a, b in steps:
            at["pos"] = a
            _, cache = cached_forward(lm, xs[:, a:b], None, None, cache)
            layers = getattr(cache, "layers", None)
            states[b] = [dict(layer.__dict__) for layer in layers] if layers is not None else None
    corrupt_in = [torch.cat(parts, dim=1) for parts in inputs]
    corrupt_final = final_norm(corrupt_in[-1][:, -1:])[:, 0]
    low_rows = answer_prob(lm, corrupt_final, answer_id)
    return Prepared(ids, s0, s1, answer_id, settings, noise, clean, high, corrupt_in, low_rows, corrupt_final,
                    states, cache)
