"""FT and FT-L: fine-tuning one layer's MLP on the edit prompt (the ROME paper's baselines, and EasyEdit's).

Meng et al. 2022 ("Locating and Editing Factual Associations in GPT", §4 and appendix) compare ROME with

* **FT** — unconstrained fine-tuning of one MLP layer so that ``target_new`` follows the prompt;
* **FT-L** — the same with an L∞ constraint on the weight change (after Zhu et al. 2020): after every
  optimiser step each entry of ``W - W0`` is clamped to ``[-eps, eps]`` (ROME's ``norm_constraint``,
  5e-4 for GPT-2 XL). This is ``ft_l``.

The name means something else elsewhere: EasyEdit (and the papers that ran it: Yao et al. 2023, Gu et al.
2024, Zhang et al. 2024, and the survey's experiments) call "FT-L" fine-tuning one layer with the loss at the
prompt's *last token* and, in its GPT-J and LLaMA configurations, *no* norm constraint; its teacher-forced
variant is "FT-M". That FT-L is ``ft_l_easyedit`` (:mod:`editcore.methods.ft_l_easyedit`).

What is trained: the weight of the MLP *output projection* of ``layer`` (``down_proj`` / ``c_proj`` /
``fc_out``), optionally also the input projection(s) (``train_mlp_in``; gate and up for gated MLPs). The
default is the output projection only: it is the matrix ROME edits, so FT/FT-L and ROME change the same
parameters and their side effects can be compared like for like. Biases are not trained.

Objective (``objective``): mean over requests of the mean token negative log-likelihood of ``target_new``,

* ``"teacher_forced"`` (EditScope's default for ``ft``/``ft_l``, EasyEdit's FT-M): each target token after
  the prompt and the target tokens before it — the standard multi-token likelihood the metrics measure;
* ``"prompt_last"`` (ROME's ``baselines/ft`` and EasyEdit's FT-L): every target token scored at the prompt's
  last position.

Targets are tokenised by :func:`editcore.text.target_ids` (leading space, *no* special tokens): training on
a ``<bos>`` inside the target is what makes EasyEdit's FT fail on Gemma. Adam, ``lr`` and ``steps`` from the
hyper-parameters; training stops once every target token is the top-1 prediction (``stop_at_top1``, an
EditScope early stop) or the loss falls below ``stop_loss`` (ROME's and EasyEdit's rule, 1e-2).
``preset="reference"`` (``editcore/hparams/ft*/reference.json``) trains as ROME's baseline does: the
prompt-last objective and the loss rule only.

Speed: blocks below ``layer`` do not change during fine-tuning, so they run once;
:class:`editcore.methods.replay.BlockReplay` (shared with ROME/MEMIT) records the input of block ``layer`` and
each step runs only blocks ``layer..L-1``, then the final norm and the unembedding at the target positions.

The model is left bit-identical: the trained tensors are modified inside :func:`editcore.scope.scratch`,
which copies the originals back whatever happens; the delta is ``trained - original``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import InputError
from ..scope import Patch, scratch
from ..text import padded, prompt_ids, target_ids
from ..types import Request
from .common import validate_requests
from .replay import BlockReplay
from .speed import Speed
from .base import Edit, MethodInfo, Progress, hparam, preset_hparam

log = logging.getLogger(__name__)


OBJECTIVES = ("teacher_forced", "prompt_last")


@dataclass(frozen=True)
class FTHparams:
    preset: str = preset_hparam()
    layer: int = hparam(0, lo=0, hi=4096, help="layer whose MLP is fine-tuned")
    objective: str = hparam("teacher_forced", choices=OBJECTIVES,
                            help="teacher_forced: each target token after the ones before it; prompt_last: every "
                                 "target token at the prompt's last position (ROME's FT, EasyEdit's FT-L)")
    train_mlp_in: bool = hparam(False, choices=(False, True),
                                help="also train the MLP input projection(s), not only the output projection")
    lr: float = hparam(5e-4, lo=1e-7, hi=1.0, help="Adam learning rate")
    steps: int = hparam(25, lo=1, hi=1000, help="maximum optimiser steps")
    weight_decay: float = hparam(0.0, lo=0.0, hi=1.0, help="Adam weight decay (on the full weight, as in ROME's FT)")
    stop_loss: float = hparam(1e-2, lo=0.0, hi=10.0, help="stop once the mean target NLL is below this")
    stop_at_top1: bool = hparam(True, choices=(False, True),
                                help="stop once every target token is the model's top-1 prediction")


@dataclass(frozen=True)
class FTLHparams(FTHparams):
    norm_constraint: float = hparam(5e-4, lo=1e-9, hi=10.0,
                                    help="L-infinity bound eps on each entry of the weight change")


@dataclass
class TrainBatch:
    """Right-padded prompt+target sequences and where each target token is scored."""

    ids: torch.Tensor  # [B, T]
    mask: torch.Tensor  # [B, T]
    rows: torch.Tensor  # [N] sequence of each scored target token
    positions: torch.Tensor  # [N] position whose prediction is the target token (one before it)
    labels: torch.Tensor  # [N] target token ids
    owner: torch.Tensor  # [N] request index of each target token
    n_requests: int


def build_batch(lm, requests: Sequence[Request], objective: str = "teacher_forced") -> TrainBatch:
    """Training batch: ``prompt_ids(prompt) + target_ids(target_new)`` per request, each target token scored
    at the position before it (teacher forcing), or the prompt alone with every target token scored at its
    last position (``"prompt_last"``)."""
    if objective not in OBJECTIVES:
        raise InputError(f"unknown fine-tuning objective {objective!r}; use one of {', '.join(OBJECTIVES)}")
    seqs, rows, positions, labels, owner = [], [], [], [], []
    for r, req in enumerate(requests):
        p = prompt_ids(lm.tokenizer, req.text)
        t = target_ids(lm.tokenizer, req.target_new)
        seqs.append(p + t if objective == "teacher_forced" else p)
        for j, tok in enumerate(t):
            rows.append(r)
            positions.append(len(p) - 1 + (j if objective == "teacher_forced" else 0))
            labels.append(tok)
            owner.append(r)
    ids, mask = padded(lm, seqs)
    dev = ids.device

    def as_t(values):
        return torch.tensor(values, dtype=torch.long, device=dev)

    return TrainBatch(ids, mask, as_t(rows), as_t(positions), as_t(labels), as_t(owner), len(requests))


def trained_param_names(lm, layer: int, train_mlp_in: bool) -> list[str]:
    ad = lm.adapter
    names = [ad.mlp_out_param_name(layer)]
    if train_mlp_in:
        slots = ("mlp_gate", "mlp_up") if ad.gated else ("mlp_in",)
        names += [ad.module_name(s, layer) + ".weight" for s in slots]
    return names


def _target_logprobs(lm, h: torch.Tensor, batch: TrainBatch) -> torch.Tensor:
    """Log-distribution ``[N, V]`` (float32) at the scored positions only."""
    return torch.log_softmax(lm.adapter.logits(h[batch.rows, batch.positions]).float(), dim=-1)


def request_loss(tok_lp: torch.Tensor, batch: TrainBatch) -> torch.Tensor:
    """Mean over requests of each request's mean token NLL (a long target does not outweigh a short one)."""
    per_req = torch.zeros(batch.n_requests, device=tok_lp.device, dtype=tok_lp.dtype)
    per_req = per_req.index_add(0, batch.owner, -tok_lp)
    counts = torch.bincount(batch.owner, minlength=batch.n_requests).to(tok_lp.dtype)
    return (per_req / counts).mean()


def finetune(lm, requests: Sequence[Request], hp: FTHparams, eps: float | None,
             progress: Progress | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Fine-tune the chosen weights on ``requests`` and return ``(deltas, diagnostics)``; the model's
    parameters and their ``requires_grad`` flags are restored before returning."""
    layer = lm.adapter.check_layer(hp.layer)
    batch = build_batch(lm, requests, hp.objective)
    names = trained_param_names(lm, layer, hp.train_mlp_in)
    params = dict(lm.model.named_parameters())
    train = {n: params[n] for n in names}
    curve: list[float] = []
    top1_curve: list[float] = []
    stop_reason = "steps"
    already = False
    with lm.lock, scratch(lm.model, names):
        originals = {n: p.detach().clone() for n, p in train.items()}
        flags = {n: p.requires_grad for n, p in train.items()}
        try:
            replay = BlockReplay(lm, batch.ids, batch.mask, layer)
            for p in train.values():
                p.requires_grad_(True)
            opt = torch.optim.Adam(list(train.values()), lr=hp.lr, weight_decay=hp.weight_decay)
            steps_done = 0
            for it in range(hp.steps + 1):
                h = replay.run()
                if it == 0 and not replay.check(h):
                    h = replay.run()
                logp = _target_logprobs(lm, h, batch)
                tok_lp = logp.gather(1, batch.labels[:, None])[:, 0]
                loss = request_loss(tok_lp, batch)
                top1 = logp.detach().argmax(-1) == batch.labels
                loss_value = float(loss.detach())
                curve.append(loss_value)
                top1_curve.append(float(top1.float().mean()))
                if it == 0 and bool(top1.all()):
                    already = True
                if hp.stop_at_top1 and bool(top1.all()):
                    stop_reason = "top1"
                    break
                if loss_value < hp.stop_loss:
                    stop_reason = "loss"
                    break
                if it == hp.steps:
                    break
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                steps_done += 1
                if eps is not None:
                    with torch.no_grad():
                        for n, p in train.items():
                            p.copy_(originals[n] + (p - originals[n]).clamp_(-eps, eps))
                if progress is not None:
                    progress(f"fine-tuning layer {layer}: step {steps_done}", steps_done / hp.steps)
            with torch.no_grad():
                deltas = {n: (p.detach() - originals[n]).clone() for n, p in train.items()}
        finally:
            for n, p in train.items():
                p.requires_grad_(flags[n])
                p.grad = None
    if already:
        log.warning("the new target is already the model's top-1 continuation before fine-tuning")
    diag = {
        "layer": layer,
        "preset": hp.preset,
        "objective": hp.objective,
        "trained": names,
        "steps": steps_done,
        "stop_reason": stop_reason,
        "loss_curve": curve,
        "top1_curve": top1_curve,
        "final_loss": curve[-1],
        "success_in_training": bool(top1_curve[-1] == 1.0),
        "already_answer": already,
        "replayed_upper_blocks": replay.use_replay,
        "max_abs_delta": max(float(d.abs().max()) for d in deltas.values()),
    }
    return deltas, diag


class FT:
    """FT (``constrained=False``) or FT-L (``constrained=True``); see the module docstring. ``hparams`` gives a
    variant its own defaults (EasyEdit's FT-L)."""

    batched = True  # several requests are fine-tuned jointly, as in ROME's FT baseline

    def __init__(self, name: str, constrained: bool, info: MethodInfo, hparams: type | None = None,
                 always_adapted: bool = False):
        self.name = name
        self.version = "1"
        self.always_adapted = always_adapted
        self.constrained = constrained
        self.info = info
        self.Hparams = hparams or (FTLHparams if constrained else FTHparams)

    def compute(self, lm, requests: Sequence[Request], hp, progress: Progress | None = None, *,
                speed: Speed | None = None) -> Edit:
        """FT's only fast path (replaying the blocks above the trained layer) is always on, so ``speed`` is
        accepted (every method takes it) and not used."""
        t0 = time.perf_counter()
        if not isinstance(hp, self.Hparams):
            raise InputError(f"{self.name} needs {self.Hparams.__name__}, got {type(hp).__name__}")
        requests = tuple(validate_requests(lm, requests))
        lm.adapter.check_layer(hp.layer)
        eps = hp.norm_constraint if self.constrained else None
        deltas, diag = finetune(lm, requests, hp, eps, progress)
        # ROME's baselines depart from the reference only in the fast preset's objective and early stop.
        departs = self.always_adapted or hp.objective != "prompt_last" or hp.stop_at_top1
        diag["adaptation"] = self.info.adaptation if departs else ""
        patch = Patch(deltas, label=f"{self.name}@{hp.layer}")
        seconds = time.perf_counter() - t0
        diag["update_norms"] = patch.norms()
        log.info("%s: layer %d, %d steps (%s), final loss %.4f, %.2fs", self.name, hp.layer, diag["steps"],
                 diag["stop_reason"], diag["final_loss"], seconds)
        return Edit(self.name, requests, patch, seconds, diag)


METHOD = FT("ft", False, MethodInfo(
    title="FT", category="fine-tuning",
    reference="Meng et al. 2022 (ROME's fine-tuning baseline)",
    summary="Fine-tunes one MLP layer on the edit prompt until the new target is the top-1 continuation "
            "(unconstrained; teacher-forced, EasyEdit's FT-M objective).",
    adaptation="the fast preset trains teacher-forced and stops once the target is top-1; ROME's baseline scores "
               "every target token at the prompt's last position and stops on the loss only (preset 'reference')"))
