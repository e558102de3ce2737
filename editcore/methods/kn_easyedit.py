"""KN as EasyEdit runs it (``easyeditor/models/kn``, the EleutherAI ``knowledge-neurons`` package that ROME's
baselines also use): the KN of the survey's experiments and of Gu et al. 2024. The attribution is the
integrated gradient of :mod:`editcore.methods.kn` (the authors' variant is ``kn``); these differ:

* **Scaling points**: ``linspace(0, 1, steps)`` (0 and 1 included), the sum divided by ``steps``; the
  authors use ``k/m`` for ``k = 1..m``.
* **Targets of the attribution**: every token of the old answer, the ``i``-th scored after the prompt and the
  model's first ``i`` greedy tokens; the attributions are averaged over the answer's tokens.
* **Thresholds**: neurons above ``adaptive_threshold`` (0.2) times the largest attribution over all layers,
  from the edit prompt alone (EasyEdit's ``refine: false``; no paraphrases, no sharing threshold ``p``).
* **Update**: on each selected neuron's value vector ``W_out[:, j]``, ``- e(o_t)`` for every token of the
  model's own greedy continuation ``o`` (as long as the new target) and ``+ e(n_t)`` for every token of the
  new target, with the *bare* input-embedding rows ``e``; a single-token target gets twice that
  (``scale``, EasyEdit's hard-coded 2). The authors instead scale unit embeddings to each value vector's norm
  with lambdas 1 and 8.

EasyEdit's LLaMA configuration uses a single scaling point (``steps: 1``, i.e. the gradient at 0); its GPT-2 XL
configuration's 20 steps are the default here. Targets are tokenised with a leading space and no special
tokens (EasyEdit's ``tokenizer.encode`` adds a ``<bos>`` for LLaMA-style tokenizers and no space).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import InputError
from ..scope import Patch
from ..text import final_hidden, prompt_ids, target_ids
from ..types import Request
from .base import Edit, MethodInfo, Progress, hparam
from .common import validate_requests
from .kn import Attribution, attribute, select_neurons
from .speed import Speed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KNEasyEditHparams:
    layers: tuple = hparam((), lo=0, hi=4096, help="layers to examine; empty = every layer")
    steps: int = hparam(20, lo=1, hi=500, help="scaling points linspace(0, 1, steps) of the integrated gradient")
    adaptive_threshold: float = hparam(0.2, lo=0.0, hi=1.0, help="keep neurons with attr > t * max attr")
    scale: float = hparam(2.0, lo=0.0, hi=1000.0,
                          help="factor on the embeddings for a single-token target (EasyEdit: 2); multi-token: 1")
    max_neurons: int = hparam(0, lo=0, hi=100000, help="keep at most this many top neurons (0 = no cap)")
    batch_rows: int = hparam(256, lo=1, hi=100000, help="(layer, alpha) rows per attribution batch")


@torch.no_grad()
def greedy_path(lm, ids: Sequence[int], n: int) -> list[int]:
    """The model's next ``n`` greedy tokens after ``ids`` (a plain loop: a handful of tokens)."""
    seq = list(ids)
    out: list[int] = []
    for _ in range(n):
        x = torch.tensor([seq], device=lm.device)
        h = final_hidden(lm.model.base_model(input_ids=x, use_cache=False))
        tok = int(lm.adapter.logits(h[0, -1]).argmax())
        out.append(tok)
        seq.append(tok)
    return out


def answer_attribution(lm, ids: Sequence[int], answer: Sequence[int], path: Sequence[int], layers: Sequence[int],
                       hp: KNEasyEditHparams) -> Attribution:
    """The attribution of each answer token after the prompt plus the greedy tokens before it, averaged."""
    alphas = torch.linspace(0.0, 1.0, hp.steps)
    parts = [attribute(lm, "", tok, layers, hp.steps, hp.batch_rows, ids=list(ids) + list(path[:i]), alphas=alphas)
             for i, tok in enumerate(answer)]
    first = parts[0]
    return Attribution(first.layers, torch.stack([a.scores for a in parts]).mean(0), first.activations, first.answer_id,
                       first.answer_prob, all(a.cached for a in parts))


def easyedit_deltas(lm, neurons: Sequence[tuple[int, int]], old_ids: Sequence[int], new_ids: Sequence[int],
                    scale: float) -> dict[str, torch.Tensor]:
    """``W_out[:, j] += w * (sum_t e(new_t) - sum_t e(old_t))`` for every selected neuron, ``e`` the input
    embedding rows, ``w = scale`` for a single-token target and 1 otherwise; zero elsewhere."""
    ad = lm.adapter
    emb = lm.model.get_input_embeddings().weight.detach().float()
    w = scale if len(new_ids) == 1 else 1.0
    direction = w * (emb[list(new_ids)].sum(0) - emb[list(old_ids)].sum(0))
    by_layer: dict[int, list[int]] = {}
    for l, j in neurons:
        by_layer.setdefault(l, []).append(j)
    deltas = {}
    for l, cols in sorted(by_layer.items()):
        weight = ad.mlp_out_weight(l)
        d = torch.zeros(ad.d_model, ad.d_mlp, device=weight.device, dtype=torch.float32)
        d[:, sorted(set(cols))] = direction.to(weight.device)[:, None]
        deltas[ad.mlp_out_param_name(l)] = ad.to_param_layout(d).to(weight.dtype)
    return deltas


class KNEasyEdit:
    name = "kn_easyedit"
    version = "1"
    info = MethodInfo(
        title="KN (EasyEdit)", category="locate-then-edit",
        reference="Dai et al. 2022, as implemented in EasyEdit (Wang et al. 2024) and used by Gu et al. 2024",
        summary="Knowledge neurons as EasyEdit finds and edits them: integrated gradients of the old answer's "
                "tokens, neurons above 20% of the largest attribution, and their output weights moved by the "
                "bare embeddings of the model's own answer (down) and the new target (up). The authors' "
                "variant is `kn`.",
        adaptation="targets are tokenised with a leading space and no special tokens (EasyEdit's encode adds a "
                   "<bos> to LLaMA-style targets and no space)")
    Hparams = KNEasyEditHparams
    batched = False

    def compute(self, lm, requests: Sequence[Request], hp: KNEasyEditHparams, progress: Progress | None = None, *,
                speed: Speed | None = None) -> Edit:
        """KN has no switchable fast path, so ``speed`` is accepted (every method takes it) and not used."""
        t0 = time.perf_counter()
        if not isinstance(hp, KNEasyEditHparams):
            raise InputError(f"kn_easyedit needs KNEasyEditHparams, got {type(hp).__name__}")
        requests = tuple(requests)
        req, = validate_requests(lm, requests, one_at_a_time="KN")
        layers = list(hp.layers) if hp.layers else list(range(lm.adapter.n_layers))
        for l in layers:
            lm.adapter.check_layer(l)
        tok = lm.tokenizer
        ids = prompt_ids(tok, req.text)
        new_ids = target_ids(tok, req.target_new)
        with lm.lock:
            true_ids = target_ids(tok, req.target_true) if req.target_true else []
            path = greedy_path(lm, ids, max(len(true_ids), len(new_ids)))
            answer = true_ids or path[:1]  # without an old answer, the model's own first token
            if progress is not None:
                progress("attributing the old answer", 0.1)
            attr = answer_attribution(lm, ids, answer, path, layers, hp)
            neurons = select_neurons([attr], hp.adaptive_threshold, 0.0, hp.max_neurons)
            old_ids = path[:len(new_ids)]
            deltas = easyedit_deltas(lm, neurons, old_ids, new_ids, hp.scale)
        if not neurons:
            log.warning("kn_easyedit: no neuron passed the threshold for %r; the edit is empty", req.text)
        patch = Patch(deltas, label=f"kn_easyedit:{len(neurons)} neurons")
        seconds = time.perf_counter() - t0
        diag = {
            "neurons": [list(n) for n in neurons], "n_neurons": len(neurons), "layers_examined": layers,
            "layers_edited": sorted({l for l, _ in neurons}),
            "answer_tokens": [tok.decode([t]) for t in answer], "removed_tokens": [tok.decode([t]) for t in old_ids],
            "new_tokens": [tok.decode([t]) for t in new_ids], "answer_prob": attr.answer_prob,
            "max_attribution": float(attr.scores.max()), "kv_cached_attribution": attr.cached,
            "update_norms": patch.norms(), "adaptation": self.info.adaptation,
        }
        log.info("kn_easyedit: %d neurons in layers %s, %.2fs", len(neurons), diag["layers_edited"], seconds)
        return Edit(self.name, requests, patch, seconds, diag)


METHOD = KNEasyEdit()
