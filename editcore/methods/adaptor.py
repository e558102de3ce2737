"""What the adaptor methods share: CaliNET, T-Patcher, MELO and WISE add trained tensors *beside* the model.

None of them changes a weight or registers a module on the shared model. Each edit is a
:class:`~editcore.scope.Patch` of forward hooks (:class:`~editcore.scope.Hook`) whose callables hold their
own trained tensors; the scope installs them and removes them, so the model and its ``state_dict`` are never
touched and rollback is the removal of the hooks.

* :class:`AdaptorHook` — a hook on a module that rewrites the module's output with what a small trained
  module adds (a patch neuron, calibration slots, a LoRA block, a side memory).
* Lineages: WISE's side memory, MELO's index and CaliNET's slots are *state* that every further edit of the
  method continues. Each patch carries the whole state after its edit; hooks of one ``family`` on one module
  with ``supersedes`` set form a lineage in which only the newest acts (:func:`newest`). A later patch hides
  an earlier one while it is installed, and rolling it back makes the earlier one act again, exactly as it
  did. T-Patcher's neurons simply accumulate (:func:`installed` finds them).
* :func:`edit_rows` — the training rows: each request's prompt alone and after ROME-style sampled context
  prefixes, teacher-forced on the new target; ``at`` marks the positions that predict a target token (where
  an adaptor must act).
* :func:`negative_batch` — generic text sampled from the model once (cached on disk), whose activations are
  what an adaptor must leave alone (T-Patcher's memory, WISE's irrelevant inputs).
* :func:`replay_for` and :func:`fit` — the optimisation: the blocks above the lowest adapted layer are
  replayed (:class:`~editcore.methods.replay.BlockReplay`) and the target's teacher-forced NLL plus a
  method's own terms is minimised over the adaptor's tensors only.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from .. import hooks
from ..errors import InputError
from ..scope import content_key
from ..text import padded, prompt_ids
from ..types import Request
from .base import Progress
from .common import context_templates, fill, stopped_at, subject_last_index, validate_requests
from .ft import TrainBatch, build_batch, request_loss
from .replay import BlockReplay

log = logging.getLogger(__name__)

NEGATIVE_SEED = 17  # the negatives' sampling seed: other than the context prefixes' (0), so the two differ


def checked(method, lm, requests: Sequence[Request], hp, one_at_a_time: bool) -> tuple[Request, ...]:
    """The requests, validated (one only, for a method that edits one fact at a time), after checking that
    ``hp`` is the method's hyper-parameter class."""
    if not isinstance(hp, method.Hparams):
        raise InputError(f"{method.name} needs {method.Hparams.__name__}, got {type(hp).__name__}")
    return tuple(validate_requests(lm, requests, one_at_a_time=method.info.title if one_at_a_time else None))


def resolve_layer(lm, layer: int, default: int) -> int:
    """``layer``, or ``default`` for ``-1``; checked against the model."""
    return lm.adapter.check_layer(default if layer == -1 else layer)


# ---- hooks -------------------------------------------------------------------------------------------------
class AdaptorHook:
    """A forward hook that rewrites a module's hidden output with :meth:`rewrite`.

    ``rewrite(x, h)`` gets the module's first positional input ``x`` and its hidden output ``h`` and returns
    the new output, or ``None`` to leave the output exactly as it is (an adaptor that does not act on any
    position of a call changes nothing, not even by rounding)."""

    family = "adaptor"
    supersedes = False  # only the newest hook of this family on a module acts (see the module docstring)

    def __call__(self, module, args, output):
        if self.supersedes and newest(module, self.family) is not self:
            self.stepped_aside()
            return None
        new = self.rewrite(args[0], hooks.first(output))
        return None if new is None else hooks.replace_hidden(output, new)

    def rewrite(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor | None:
        raise NotImplementedError

    def stepped_aside(self) -> None:
        """Called instead of :meth:`rewrite` while a newer hook of the lineage is installed."""


def installed(module: torch.nn.Module, family: str) -> list:
    """The hooks of ``family`` on ``module`` now, oldest first (the patches applied in the current scope)."""
    return [fn for fn in module._forward_hooks.values() if getattr(fn, "family", None) == family]


def newest(module: torch.nn.Module, family: str):
    """The most recently installed hook of ``family`` on ``module``, or ``None``."""
    for fn in reversed(module._forward_hooks.values()):
        if getattr(fn, "family", None) == family:
            return fn
    return None


def training(pairs: Sequence[tuple[torch.nn.Module, Callable]]):
    """Install ``(module, hook)`` pairs for the length of a ``with`` block (the adaptor being trained)."""
    return hooks.removing([hooks.add(m, fn) for m, fn in pairs])


def where_rows(mask: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """``new`` where ``mask`` ([..., T]) is set, else ``old`` bit for bit."""
    return torch.where(mask[..., None], new, old)


# ---- training rows -----------------------------------------------------------------------------------------
@dataclass
class EditRows:
    """Teacher-forcing rows of some requests, each alone and after sampled context prefixes."""

    requests: tuple[Request, ...]  # one per row
    owner: list[int]  # which of the given requests each row edits
    batch: TrainBatch
    at: torch.Tensor  # bool [B, T]: the positions whose next token is a target token
    templates: list[str] = field(default_factory=list)

    @property
    def real(self) -> torch.Tensor:
        return self.batch.mask.bool()


def edit_rows(lm, requests: Sequence[Request], prefixes: int, prefix_tokens: int) -> EditRows:
    """Rows of every request in every context template (``"{}"`` and ``prefixes`` sampled prefixes, the ones
    ROME samples with the same settings). The paraphrases of a benchmark are never used: they are what the
    metrics test generalisation on."""
    templates = context_templates(lm, prefixes, prefix_tokens)
    expanded, owner = [], []
    for i, req in enumerate(requests):
        for ctx in templates:
            expanded.append(Request(fill(ctx, req.prompt), req.subject, req.target_new, req.target_true))
            owner.append(i)
    batch = build_batch(lm, expanded)
    at = torch.zeros_like(batch.mask, dtype=torch.bool)
    at[batch.rows, batch.positions] = True
    return EditRows(tuple(expanded), owner, batch, at, templates)


def subject_positions(lm, rows: EditRows) -> torch.Tensor:
    """bool ``[B, T]``: the subject's tokens in every row (where ROME edits and WISE's code, for facts with a
    subject, measures the edit's activation)."""
    out = torch.zeros_like(rows.at)
    for r, req in enumerate(rows.requests):
        _, last = subject_last_index(lm.tokenizer, req.prompt, req.subject)
        first = len(prompt_ids(lm.tokenizer, req.prompt.split("{}", 1)[0].rstrip()))
        out[r, min(first, last):last + 1] = True
    return out


def negative_batch(lm, n: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids, mask)`` of ``n`` generic texts of ``length`` tokens sampled from the model (top-k 5, a fixed
    seed, kept on disk per model like ROME's context prefixes), with the model's BOS."""
    texts = [t[:-len(". {}")] for t in context_templates(lm, n, length, seed=NEGATIVE_SEED)[1:]]
    return padded(lm, [prompt_ids(lm.tokenizer, t) for t in texts])


@torch.no_grad()
def read(lm, module: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, which: str = "in") -> torch.Tensor:
    """``module``'s input (``which="in"``) or output at every real (unpadded) position, ``[n, d]`` float32."""
    x = stopped_at(lm, module, ids, mask, which)
    return x[mask.bool()].float()


# The negatives' activations of the last (model, module) read: {model: (key, tensor)}.
_NEGATIVES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def negatives_at(lm, module: torch.nn.Module, n: int, length: int, which: str = "in") -> torch.Tensor:
    """:func:`read` of the :func:`negative_batch`, kept while the model holds the same weights and hooks.

    A module's own forward hooks change its output, not its input, so they are left out of the key of an
    input read: a new T-Patcher neuron does not make the next edit read the negatives again."""
    if n <= 0:
        return torch.empty(0, device=lm.device)
    hooked = []
    for name, m in lm.model.named_modules():
        seen = (tuple(m._forward_pre_hooks.values()),
                () if m is module and which == "in" else tuple(m._forward_hooks.values()))
        if any(seen):
            hooked.append((name, seen))
    hooked = tuple(hooked)
    key = (content_key(lm.model), hooked, id(module), n, length, which, str(lm.device))
    hit = _NEGATIVES.get(lm.model)
    if hit is not None and hit[0] == key:
        return hit[1]
    got = read(lm, module, *negative_batch(lm, n, length), which)
    _NEGATIVES[lm.model] = (key, got)
    return got


# ---- optimisation ------------------------------------------------------------------------------------------
def replay_for(lm, rows: EditRows, start: int, speed) -> BlockReplay:
    """A checked replay of ``rows`` from block ``start`` (full forwards when ``speed.block_replay`` is off or
    the replay disagrees with a plain forward). Built before the adaptor being trained acts."""
    replay = BlockReplay(lm, rows.batch.ids, rows.batch.mask, start, enabled=speed is None or speed.block_replay)
    with torch.no_grad():
        replay.check(replay.run())
    return replay


@dataclass
class Fit:
    steps: int
    stop_reason: str
    loss_curve: list[float]
    top1_curve: list[float]
    terms: dict[str, float]  # the method's own loss terms at the end

    @property
    def success(self) -> bool:
        return bool(self.top1_curve and self.top1_curve[-1] == 1.0)

    def diagnostics(self) -> dict:
        return {"steps": self.steps, "stop_reason": self.stop_reason, "loss_curve": self.loss_curve,
                "top1_curve": self.top1_curve, "final_loss": self.loss_curve[-1],
                "success_in_training": self.success, **{f"final_{k}": v for k, v in self.terms.items()}}


def fit(lm, rows: EditRows, replay: BlockReplay, params: list[torch.Tensor], *, steps: int, lr: float,
        optimiser: str = "adam", weight_decay: float = 0.0,
        extra: Callable[[], dict[str, torch.Tensor]] | None = None,
        satisfied: Callable[[], bool] | None = None, after_step: Callable[[], None] | None = None,
        lr_step: int = 0, lr_gamma: float = 1.0, progress: Progress | None = None, label: str = "") -> Fit:
    """Minimise the mean (over rows) target NLL plus ``extra()``'s terms over ``params``.

    Each step replays the rows through the hooks the caller installed; ``extra`` reads what those hooks saw
    in that pass. Stops once every target token of every row is the top-1 prediction and ``satisfied()``
    (the method's own condition, e.g. silence on the negatives), or after ``steps`` updates. ``after_step``
    runs after every update (a projection or clamp); ``lr_step``/``lr_gamma`` a step decay of the rate."""
    b = rows.batch
    if optimiser == "sgd":
        opt = torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)
    else:
        opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=lr_step, gamma=lr_gamma) if lr_step > 0 else None
    curve, top1_curve, terms = [], [], {}
    reason, done = "steps", 0
    for it in range(steps + 1):
        h = replay.run()
        tok_lp, _, top = lm.adapter.label_log_probs(h[b.rows, b.positions], b.labels, want_top=True)
        parts = extra() if extra is not None else {}
        loss = request_loss(tok_lp, b) + sum(parts.values())
        correct = top == b.labels
        curve.append(float(loss.detach()))
        top1_curve.append(float(correct.float().mean()))
        terms = {k: float(v.detach()) for k, v in parts.items()}
        if bool(correct.all()) and (satisfied is None or satisfied()):
            reason = "top1"
            break
        if it == steps:
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        done += 1
        if after_step is not None:
            with torch.no_grad():
                after_step()
        if sched is not None:
            sched.step()
        if progress is not None:
            progress(f"{label}step {done}/{steps}", done / steps)
    return Fit(done, reason, curve, top1_curve, terms)


def frozen(t: torch.Tensor) -> torch.Tensor:
    """A trained tensor as a patch keeps it: detached, its own storage."""
    return t.detach().clone()
