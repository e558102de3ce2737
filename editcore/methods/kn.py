"""KN: knowledge neurons (Dai et al. 2022, "Knowledge Neurons in Pretrained Transformers").

**Attribution** (the paper's §3, integrated gradients). A *neuron* is one entry of the MLP's intermediate
activation — the input of the output projection (the MLP "key": ``act(W_in x)``, or ``act(gate) * up``
for gated MLPs). For the fact's prompt and answer token ``y`` (the first token of ``target_true``; the model's
own top-1 next token when ``target_true`` is missing), read the activations ``a`` of a layer at the last
prompt token, then scale them all by ``alpha = k / m`` for ``k = 1..m`` (right Riemann sum of the
path integral from the zero baseline) and accumulate the gradient of ``P(y | prompt)`` — the probability,
not the log-probability, as in the paper — with respect to the scaled activation:

    attr_i = a_i * (1/m) * sum_k  dP(y | alpha_k * a) / d a_i

Each layer is scaled on its own (the other layers' activations follow the normal forward).

Only the last position changes when the last position's activation is scaled (attention is causal), so the
prompt's prefix is run once with a KV cache and every (layer, alpha) pair is one row of a single batch that
feeds just the last token: all alpha steps of all layers cost one batched one-token forward and backward.
A reference row with no scaling checks the cached path against the full forward; should they disagree
(a family whose cache behaves differently), full prompts are run instead.

**Selection.** Neurons with ``attr > t * max(attr)`` over all examined layers (the paper's adaptive
threshold, ``t = 0.2``). With several prompts for the same fact (``paraphrases``), a neuron is kept if it
passes the threshold on at least a fraction ``p`` of the prompts (the paper's refining step).

**Update** (the paper's §5.1, "updating facts"). The value vector of neuron ``j`` in layer ``l`` is column
``W_out[:, j]`` of the output projection in ``[d_model, d_mlp]`` orientation. For every selected neuron

    W_out[:, j] <- W_out[:, j] - lambda1 * s_j * e(y_old) / |e(y_old)| + lambda2 * s_j * e(y_new) / |e(y_new)|

with ``s_j = |W_out[:, j]|``, the value vector's own norm. That scaling is what the authors' code does
(``src/6_edit_knowledge_sampled.py`` in Hunter-DDM/knowledge-neurons: ``lambda_i = |value_i| / |emb| *
norm_lambda``, with ``norm_lambda1 = 1, norm_lambda2 = 8`` per its README "as in our paper"); the paper's
text writes the update with the bare embeddings, which ``scale_to_value_norm=False`` gives
(``- lambda1 * e(y_old) + lambda2 * e(y_new)``). ``e(.)`` is the row of the model's **unembedding** (output
embedding, ``lm_head``) matrix for the *first token* of the old answer (``target_true``, or the model's
current top-1 token) and of ``target_new`` (tokenised with :func:`editcore.text.target_ids`: leading space,
no special tokens). The paper (BERT, tied embeddings) writes ``t(.)`` for "the word embedding"; the
unembedding row is the direction that raises the token's logit, and for the tied models bundled here
(Gemma-3, SmolLM2) it is the same matrix. ROME's and EasyEdit's KN baselines use lambdas 2 and 2. Only the
selected columns of the output projections of layers that hold selected neurons change; everything else in
the patch is exactly 0. Not done here: the authors' filter that drops neurons shared by more than 10% of the
relation's other facts (it needs attributions for many facts of the relation).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .. import hooks
from ..errors import InputError
from ..scope import Patch
from ..text import cached_forward, check_length, final_hidden, prompt_ids, target_ids
from ..types import Request
from .common import validate_requests
from .speed import Speed
from .base import Edit, MethodInfo, Progress, hparam

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KNHparams:
    layers: tuple = hparam((), lo=0, hi=4096, help="layers to examine; empty = every layer")
    steps: int = hparam(20, lo=1, hi=500, help="Riemann steps m of the integrated gradient")
    adaptive_threshold: float = hparam(0.2, lo=0.0, hi=1.0, help="keep neurons with attr > t * max attr")
    refine_p: float = hparam(0.5, lo=0.0, hi=1.0,
                             help="with several prompts: keep neurons selected on at least this fraction of them")
    lambda_old: float = hparam(1.0, lo=0.0, hi=1000.0, help="lambda1: weight of the old answer's embedding removed")
    lambda_new: float = hparam(8.0, lo=0.0, hi=1000.0, help="lambda2: weight of the new answer's embedding added")
    scale_to_value_norm: bool = hparam(True, choices=(True, False),
                                       help="scale the embeddings to each value vector's norm (the authors' code)")
    max_neurons: int = hparam(0, lo=0, hi=100000, help="keep at most this many top neurons (0 = no cap)")
    batch_rows: int = hparam(256, lo=1, hi=100000, help="(layer, alpha) rows per attribution batch")


@dataclass
class Attribution:
    layers: list[int]
    scores: torch.Tensor  # [len(layers), d_mlp] float32, on CPU
    activations: torch.Tensor  # [len(layers), d_mlp] float32, on CPU
    answer_id: int
    answer_prob: float  # P(answer | prompt) of the unedited model
    cached: bool  # whether the KV-cached one-token path was used



def attribute(lm, prompt: str, answer_id: int, layers: Sequence[int], steps: int,
              batch_rows: int = 256, *, ids: Sequence[int] | None = None,
              alphas: torch.Tensor | None = None) -> Attribution:
    """Integrated-gradients attribution of every MLP neuron of ``layers`` at the prompt's last token for
    ``P(answer_id | prompt)``; see the module docstring. ``ids`` replaces the tokenised prompt; ``alphas`` are
    the scaling points (default ``k/steps`` for ``k = 1..steps``); the sum is divided by ``steps`` either way."""
    ad = lm.adapter
    layers = [ad.check_layer(int(l)) for l in layers]
    ids = list(ids) if ids is not None else prompt_ids(lm.tokenizer, prompt)
    check_length(lm, len(ids), "prompt")
    dev = lm.device
    ids_t = torch.tensor([ids], device=dev)
    modules = {l: ad.module("mlp_out", l) for l in layers}

    # Unscaled activations at the last token and the reference answer probability (one full forward).
    acts: dict[int, torch.Tensor] = {}
    grab = (hooks.on_input(mod, lambda args, l=l: acts.__setitem__(l, args[0][0, -1].detach().clone()))
            for l, mod in modules.items())
    with hooks.together(grab), torch.no_grad():
        h = final_hidden(lm.model.base_model(input_ids=ids_t, use_cache=False))
        ref_p = float(torch.softmax(ad.logits(h[0, -1]).float(), -1)[answer_id])

    # Rows: 0 is an unscaled reference; then (layer i, alpha k) for k = 1..m.
    if alphas is None:
        alphas = torch.arange(1, steps + 1, device=dev, dtype=torch.float32) / steps
    alphas = alphas.to(device=dev, dtype=torch.float32)
    row_layer = [-1] + [l for l in layers for _ in range(len(alphas))]
    row_alpha = torch.cat([torch.ones(1, device=dev), alphas.repeat(len(layers))])

    prefix_cache = None
    if len(ids) > 1:
        try:
            with torch.no_grad():
                _, prefix_cache = cached_forward(lm, ids_t[:, :-1], None, None)
        except RuntimeError:  # no key/value cache from this family: full prompts below
            prefix_cache = None

    grad_sum = {l: torch.zeros(ad.d_mlp, device=dev, dtype=torch.float32) for l in layers}
    cached = prefix_cache is not None
    for attempt in ("cached", "full") if cached else ("full",):
        ok = True
        for l in layers:
            grad_sum[l].zero_()
        for start in range(0, len(row_layer), batch_rows):
            sel = list(range(start, min(len(row_layer), start + batch_rows)))
            ok = _ig_chunk(lm, ids_t, prefix_cache if attempt == "cached" else None, modules, acts,
                           [row_layer[i] for i in sel], row_alpha[sel], answer_id, ref_p, grad_sum)
            if not ok:
                break
        if ok:
            cached = attempt == "cached"
            break
        log.warning("KN: the KV-cached attribution pass disagrees with a full forward for %s; "
                    "running full prompts instead", ad.family)
    else:
        raise RuntimeError("KN attribution: the batched pass does not reproduce the unedited forward")

    scores = torch.stack([acts[l].float() * grad_sum[l] / steps for l in layers]).cpu()
    return Attribution(layers, scores, torch.stack([acts[l].float() for l in layers]).cpu(), answer_id, ref_p,
                       cached)


def _ig_chunk(lm, ids_t, prefix_cache, modules, acts, rows_layer, rows_alpha, answer_id, ref_p,
              grad_sum) -> bool:
    """One batch of (layer, alpha) rows; adds each layer's gradient sum into ``grad_sum``. Returns False
    when the reference row (layer -1) does not reproduce the unedited activations / probability."""
    n = len(rows_layer)
    dev = ids_t.device
    leaves: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for l in modules:
        idx = [i for i, rl in enumerate(rows_layer) if rl == l]
        if idx:
            idx_t = torch.tensor(idx, device=dev)
            base = acts[l].float()[None] * rows_alpha[idx_t][:, None]
            leaves[l] = (idx_t, base.requires_grad_(True))
    has_ref = -1 in rows_layer
    mismatch = []

    def make_hook(l):
        def hook(args):
            x = args[0]
            if has_ref:
                got = x[rows_layer.index(-1), -1].detach().float()
                tol = 1e-3 * max(1.0, float(acts[l].abs().max()))
                if float((got - acts[l].float()).abs().max()) > tol:
                    mismatch.append(l)
            if l not in leaves:
                return None
            idx_t, leaf = leaves[l]
            x = x.clone()
            x[idx_t, -1] = leaf.to(x.dtype)
            return (x,) + tuple(args[1:])
        return hook

    with hooks.together(hooks.on_input(mod, make_hook(l)) for l, mod in modules.items()), torch.enable_grad():
        if prefix_cache is not None:
            cache = copy.deepcopy(prefix_cache)
            cache.batch_repeat_interleave(n)
            out, _ = cached_forward(lm, ids_t[:, -1:].expand(n, 1), None, None, cache)
        else:
            out = lm.model.base_model(input_ids=ids_t.expand(n, -1), use_cache=False)
        h = final_hidden(out)
        probs = torch.softmax(lm.adapter.logits(h[:, -1]).float(), dim=-1)[:, answer_id]
        if has_ref:
            p0 = float(probs[rows_layer.index(-1)].detach())
            if abs(p0 - ref_p) > 1e-3 * max(ref_p, 1e-3) + 1e-6:
                mismatch.append("prob")
        if mismatch:
            return False
        if leaves:
            # Rows are independent, so the gradient of the sum gives each row's own dP/da.
            grads = torch.autograd.grad(probs.sum(), [leaf for _, leaf in leaves.values()])
            for (l, (_idx, _leaf)), g in zip(leaves.items(), grads):
                grad_sum[l] += g.sum(0)
    return True


def select_neurons(attrs: Sequence[Attribution], threshold: float, p: float,
                   max_neurons: int = 0) -> list[tuple[int, int]]:
    """``(layer, neuron)`` pairs: per prompt ``attr > threshold * max attr``; with several prompts, those
    selected on at least a fraction ``p`` of them. Ordered by summed attribution, largest first."""
    counts: dict[tuple[int, int], int] = {}
    total: dict[tuple[int, int], float] = {}
    for a in attrs:
        peak = float(a.scores.max())
        if peak <= 0:
            continue
        for i, j in torch.nonzero(a.scores > threshold * peak).tolist():
            key = (a.layers[i], j)
            counts[key] = counts.get(key, 0) + 1
            total[key] = total.get(key, 0.0) + float(a.scores[i, j])
    need = 1 if len(attrs) <= 1 else max(1, math.ceil(p * len(attrs) - 1e-9))
    kept = sorted((k for k, c in counts.items() if c >= need), key=lambda k: -total[k])
    return kept[:max_neurons] if max_neurons else kept


def _current_answer(lm, prompt: str) -> int:
    ids = torch.tensor([prompt_ids(lm.tokenizer, prompt)], device=lm.device)
    with torch.no_grad():
        h = final_hidden(lm.model.base_model(input_ids=ids, use_cache=False))
        return int(lm.adapter.logits(h[0, -1]).argmax())


def kn_deltas(lm, neurons: Sequence[tuple[int, int]], old_id: int, new_id: int, lambda_old: float,
              lambda_new: float, scale_to_value_norm: bool = True) -> dict[str, torch.Tensor]:
    """The value-slot update as parameter deltas (zero everywhere but the selected columns); see the module
    docstring for the two scalings."""
    ad = lm.adapter
    emb = lm.model.get_output_embeddings().weight
    e_old, e_new = emb[old_id].detach().float(), emb[new_id].detach().float()
    if scale_to_value_norm:
        direction = lambda_new * e_new / e_new.norm().clamp_min(1e-12) - lambda_old * e_old / e_old.norm().clamp_min(1e-12)
    else:
        direction = lambda_new * e_new - lambda_old * e_old
    by_layer: dict[int, list[int]] = {}
    for l, j in neurons:
        by_layer.setdefault(l, []).append(j)
    deltas = {}
    for l, cols in sorted(by_layer.items()):
        w = ad.mlp_out_weight(l)
        idx = torch.tensor(sorted(set(cols)), device=w.device)
        d = torch.zeros(ad.d_model, ad.d_mlp, device=w.device, dtype=torch.float32)
        scale = w[:, idx].float().norm(dim=0) if scale_to_value_norm else torch.ones(len(idx), device=w.device)
        d[:, idx] = direction.to(w.device)[:, None] * scale[None, :]
        deltas[ad.mlp_out_param_name(l)] = ad.to_param_layout(d).to(w.dtype)
    return deltas


class KN:
    name = "kn"
    version = "2"  # 2: embeddings scaled to each value vector's norm, as in the authors' code
    info = MethodInfo(
        title="KN (authors' code)", category="locate-then-edit",
        reference="Dai et al. 2022, Knowledge Neurons in Pretrained Transformers (Hunter-DDM/knowledge-neurons)",
        summary="Finds MLP neurons whose integrated-gradient attribution to the answer is high and moves their "
                "output weights from the old answer's embedding towards the new one's, scaled to each neuron's "
                "value-vector norm as the authors' code does. EasyEdit's KN, which the survey and Gu et al. ran, "
                "is `kn_easyedit`.",
        adaptation="no filter of neurons shared by more than 10% of the relation's facts (the authors' code has one)")
    Hparams = KNHparams
    batched = False

    def compute(self, lm, requests: Sequence[Request], hp: KNHparams, progress: Progress | None = None,
                paraphrases: Sequence[str] = (), *, speed: Speed | None = None) -> Edit:
        """``paraphrases``: optional extra prompts (subject filled in) stating the same fact, for the
        paper's refining step; without them the request's prompt alone selects the neurons. KN has no
        switchable fast path, so ``speed`` is accepted (every method takes it) and not used."""
        t0 = time.perf_counter()
        if not isinstance(hp, KNHparams):
            raise InputError(f"kn needs KNHparams, got {type(hp).__name__}")
        requests = tuple(requests)
        req, = validate_requests(lm, requests, one_at_a_time="KN")
        layers = list(hp.layers) if hp.layers else list(range(lm.adapter.n_layers))
        for l in layers:
            lm.adapter.check_layer(l)
        prompts = [req.text] + [p for p in paraphrases if p and p != req.text]
        new_id = target_ids(lm.tokenizer, req.target_new)[0]
        with lm.lock:
            if req.target_true is not None:
                old_id = target_ids(lm.tokenizer, req.target_true)[0]
                answer_source = "target_true"
            else:
                old_id = _current_answer(lm, req.text)
                answer_source = "model top-1"
            if old_id == new_id:
                log.warning("kn: the new target's first token is the current answer's first token (%r)",
                            lm.tokenizer.decode([new_id]))
            attrs = []
            for i, prompt in enumerate(prompts):
                attrs.append(attribute(lm, prompt, old_id, layers, hp.steps, hp.batch_rows))
                if progress is not None:
                    progress(f"attributing prompt {i + 1}/{len(prompts)}", (i + 1) / len(prompts))
            neurons = select_neurons(attrs, hp.adaptive_threshold, hp.refine_p, hp.max_neurons)
            deltas = kn_deltas(lm, neurons, old_id, new_id, hp.lambda_old, hp.lambda_new, hp.scale_to_value_norm)
        if not neurons:
            log.warning("kn: no neuron passed the threshold for %r; the edit is empty", req.text)
        patch = Patch(deltas, label=f"kn:{len(neurons)} neurons")
        seconds = time.perf_counter() - t0
        diag = {
            "neurons": [list(n) for n in neurons],
            "n_neurons": len(neurons),
            "layers_examined": layers,
            "layers_edited": sorted({l for l, _ in neurons}),
            "answer_token": lm.tokenizer.decode([old_id]),
            "answer_source": answer_source,
            "answer_prob": attrs[0].answer_prob,
            "new_token": lm.tokenizer.decode([new_id]),
            "n_prompts": len(prompts),
            "max_attribution": float(max(a.scores.max() for a in attrs)),
            "kv_cached_attribution": all(a.cached for a in attrs),
            "update_norms": patch.norms(),
            "adaptation": self.info.adaptation,
        }
        log.info("kn: %d neurons in layers %s, %.2fs", len(neurons), diag["layers_edited"], seconds)
        return Edit(self.name, requests, patch, seconds, diag)


METHOD = KN()
