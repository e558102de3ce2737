"""Sequential editing at scale: hundreds to thousands of kept edits, one after another (or in batches for
methods that batch), with the model measured every few edits and a clear stop when it collapses.

One run happens inside one ``lm.scope()``, so the pristine model comes back at the end, on a stop and on
any exception. At every evaluation point the run is stored (plain JSON in the results cache) together
with the current values of every edited parameter (safetensors), so a run that was cut off resumes from
its last point: the stored values are put back as one patch and editing continues. (The put-back model
equals the interrupted one up to float rounding of ``W0 + (W_n - W0)``, at most one ulp per entry; a
run whose patches carry hooks or input rewrites cannot be put back that way and starts again.)

Measured at each point, on the model as it is then (Yang et al. 2024 for collapse, Meng et al. 2022 for
NS, Hoelscher-Obermaier et al. 2023 for NKL):

* ``retention``: fraction of the edits so far whose edit prompt still gives the new target (all target
  tokens top-1, teacher-forced); ``last_edit_top1`` for the newest one;
* ``neighbourhood_score``: NS = P(true answer) > P(new target) on two neighbourhood prompts of every
  edited fact (the fixed set of the whole run); ``nkl``: mean KL(post || unedited) of the next-token
  distributions on the same prompts, in nats;
* ``weight_drift``: ||W_n - W_0||_F over every edited matrix together;
* perplexity on held-out text and downstream probe accuracy (:func:`editcore.metrics.general.general_abilities`).

Collapse: a non-finite weight, perplexity or KL, or perplexity above ``collapse_factor`` times the
unedited value, stops the run with ``collapsed = {"after", "reason"}``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..cases import Case, answers_equal
from ..errors import InputError
from ..results_cache import default_cache, make_key

log = logging.getLogger(__name__)

Progress = Callable[[str, float], None]
MAX_EDITS = 10_000


@dataclass(frozen=True)
class SeqConfig:
    """One sequential run of one method; also the payload of its cache key."""

    method: str
    n_edits: int
    every: int = 10
    batch: int = 1  # edits per compute() for methods that batch (others edit one at a time)
    steps: tuple[int, ...] = ()  # explicit evaluation points (overrides ``every``), e.g. Figure 4's 0..40
    overrides: dict = field(default_factory=dict)
    probe_sizes: dict = field(default_factory=lambda: {"sentiment": 6, "piqa": 4, "qa": 3, "arithmetic": 3,
                                                       "summarisation": 0})
    heldout_chars: int = 1000
    neighbours_per_edit: int = 2
    collapse_factor: float = 10.0

    def __post_init__(self):
        if not 1 <= int(self.n_edits) <= MAX_EDITS:
            raise InputError(f"the number of edits must be between 1 and {MAX_EDITS}")
        if not 1 <= int(self.every) <= int(self.n_edits):
            raise InputError("evaluate every k edits with 1 <= k <= the number of edits")
        if int(self.batch) < 1:
            raise InputError("the batch size must be at least 1")
        if any(not 0 <= s <= self.n_edits for s in self.steps):
            raise InputError("every evaluation step must lie between 0 and the number of edits")
        if not self.collapse_factor > 1:
            raise InputError("the collapse factor must be above 1")

    def points(self) -> list[int]:
        if self.steps:
            return sorted({0, *map(int, self.steps)})
        return sorted({0, *range(self.every, self.n_edits + 1, self.every), self.n_edits})

    def to_dict(self) -> dict:
        return {**asdict(self), "steps": list(self.steps)}


def hparams_of(m, lm, cfg: SeqConfig) -> dict:
    """The method's hyper-parameters for this model and run, as the plain dict its cache key holds."""
    from ..methods.base import hparams_to_dict, load_hparams

    return hparams_to_dict(load_hparams(m.name, m.Hparams, lm.name, cfg.overrides or {}))


def run_key(lm, cfg: SeqConfig, m, hp_dict: dict, cases: list[Case]) -> str:
    return make_key(kind="sequential-scale", fingerprint=lm.fingerprint, method=m.name, method_version=str(m.version),
                    hparams=hp_dict, case=[c.id for c in cases[:cfg.n_edits]],
                    extra={k: v for k, v in cfg.to_dict().items() if k not in ("method", "overrides")})


def _state_path(key: str) -> Path:
    from .. import paths

    return paths.sub("sequential_state") / f"{key}.safetensors"


def _save_state(key: str, lm, drift: dict) -> None:
    from safetensors.torch import save_file

    params = dict(lm.model.named_parameters())
    tensors = {f"state::{n}": params[n].detach().cpu().contiguous() for n in drift}
    tensors.update({f"drift::{n}": d.detach().cpu().contiguous() for n, d in drift.items()})
    path = _state_path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp))
    tmp.replace(path)  # a crash while writing never leaves a half-written state behind


def _load_state(key: str) -> tuple[dict, dict] | None:
    from safetensors.torch import load_file

    path = _state_path(key)
    if not path.is_file():
        return None
    t = load_file(str(path))
    state = {k.split("::", 1)[1]: v for k, v in t.items() if k.startswith("state::")}
    drift = {k.split("::", 1)[1]: v for k, v in t.items() if k.startswith("drift::")}
    return state, drift


def _neighbours(cases: list[Case], k: int) -> list[tuple[str, str, str]]:
    return [(p.prompt, p.answer, c.target_new) for c in cases for p in c.neighbourhood[:k]
            if not answers_equal(p.answer, c.target_new)]


class _Probe:
    """Everything one evaluation point reads; the unedited reads are taken once, at point 0, and frozen."""

    def __init__(self, lm, cases: list[Case], cfg: SeqConfig):
        from ..metrics.scoring import Scorer

        self.lm, self.cases, self.cfg = lm, cases, cfg
        self.neighbours = _neighbours(cases, cfg.neighbours_per_edit)
        self.pre = Scorer(lm)  # called on the pristine model only (point 0), then frozen
        self.ppl0: float | None = None

    def point(self, n: int, drift: dict, first: bool) -> dict:
        import torch

        from ..metrics.general import general_abilities
        from ..metrics.nkl import kl_rows
        from ..metrics.scoring import Scorer
        from ..text import score_targets, target_logprobs

        lm, cases = self.lm, self.cases
        post = self.pre if first else Scorer(lm)
        out: dict[str, Any] = {"n_edits": n,
                               "weight_drift": float(sum(float(t.norm()) ** 2 for t in drift.values()) ** 0.5)}
        if n:
            done = cases[:n]
            scores = score_targets(lm, [c.edit_prompt for c in done], [c.target_new for c in done])
            out["retention"] = sum(all(s.token_correct) for s in scores) / n
            out["last_edit_top1"] = float(all(scores[-1].token_correct))
        if self.neighbours:
            prompts = [p for p, _a, _t in self.neighbours]
            lp_true = target_logprobs(lm, prompts, [a for _p, a, _t in self.neighbours])
            lp_new = target_logprobs(lm, prompts, [t for _p, _a, t in self.neighbours])
            out["neighbourhood_score"] = float((lp_true > lp_new).float().mean())
            kl = kl_rows(post.dists(prompts), self.pre.dists(prompts))
            out["nkl"] = float(kl.mean()) if bool(torch.isfinite(kl).all()) else math.nan
        sizes = self.cfg.probe_sizes
        if any(v > 0 for v in sizes.values()) or self.cfg.heldout_chars > 0:
            g = general_abilities(self.pre, post, sizes=sizes, heldout_chars=self.cfg.heldout_chars)
            out["perplexity"] = g.perplexity_post
            items = [x for p in g.probes.values() for x in p.items_post]
            out["probe_accuracy"] = sum(items) / len(items) if items else None
            out.update({f"probe_{k}": p.post.mean for k, p in g.probes.items()})
            out.update({f"probe_{k}_ci": [p.post.lo, p.post.hi, p.post.n] for k, p in g.probes.items()})
        if first:
            self.pre.freeze()
            self.ppl0 = out.get("perplexity")
        return out

    def collapse(self, point: dict) -> str | None:
        """Why the model counts as collapsed at ``point`` (None if it does not)."""
        for k in ("perplexity", "nkl", "weight_drift"):
            v = point.get(k)
            if isinstance(v, float) and not math.isfinite(v):
                return f"non-finite {k}"
        ppl = point.get("perplexity")
        if ppl is not None and self.ppl0 and ppl > self.cfg.collapse_factor * self.ppl0:
            return f"perplexity {ppl:.1f} > {self.cfg.collapse_factor:g} x unedited {self.ppl0:.1f}"
        return None


def _chunks(points: list[int], n_edits: int, batch: int) -> list[tuple[int, int]]:
    """Edit ranges [a, b) of at most ``batch`` edits that never cross an evaluation point."""
    out, a = [], 0
    for p in [q for q in points if q > 0] + ([n_edits] if n_edits not in points else []):
        while a < p:
            b = min(a + batch, p)
            out.append((a, b))
            a = b
    return out


def cached_run(lm, cases: list[Case], cfg: SeqConfig) -> dict | None:
    """What the cache holds of this run (complete, collapsed or cut off), without editing anything."""
    from ..methods import get_method

    m = get_method(cfg.method)
    return default_cache().get(run_key(lm, cfg, m, hparams_of(m, lm, cfg), list(cases[:cfg.n_edits])))


def sequential_run(lm, cases: list[Case], cfg: SeqConfig, *, progress: Progress | None = None,
                   on_point: Callable[[dict], None] | None = None, should_stop: Callable[[], bool] | None = None,
                   use_cache: bool = True) -> dict:
    """Apply ``cfg.n_edits`` kept edits of ``cases`` in order and measure the model at ``cfg.points()``.

    ``on_point`` gets the run (plain data) after every evaluation point; ``should_stop`` is asked before
    every chunk of edits. The model is pristine again when this returns or raises."""
    import torch

    from ..methods import get_method
    from ..methods.base import load_hparams
    from ..scope import Patch

    if len(cases) < cfg.n_edits:
        raise InputError(f"only {len(cases)} cases for {cfg.n_edits} edits")
    cases = list(cases[:cfg.n_edits])
    m = get_method(cfg.method)
    hp = load_hparams(m.name, m.Hparams, lm.name, cfg.overrides or {})
    hp_dict = hparams_of(m, lm, cfg)
    batch = cfg.batch if getattr(m, "batched", False) else 1
    cache = default_cache()
    key = run_key(lm, cfg, m, hp_dict, cases)
    hit = cache.get(key) if use_cache else None
    if hit is not None and hit.get("complete"):
        return hit
    points = cfg.points()
    run: dict[str, Any] = {"method": m.name, "version": str(m.version), "hparams": hp_dict, "config": cfg.to_dict(),
                           "batch": batch, "points": [], "complete": False, "stopped_after": None,
                           "collapsed": None, "edit_seconds": 0.0, "weight_only": True, "resumed_from": None,
                           "edits": [f"{c.edit_prompt} → {c.target_new}" for c in cases]}

    def say(stage: str, frac: float) -> None:
        if progress is not None:
            progress(f"[{m.name}] {stage}", min(max(frac, 0.0), 1.0))

    probe = _Probe(lm, cases, cfg)
    drift: dict[str, torch.Tensor] = {}
    applied = 0
    with lm.scope() as scope:
        try:
            say("measuring the unedited model", 0.0)
            run["points"].append(probe.point(0, drift, first=True))
            resume = hit if hit and hit.get("weight_only") and hit.get("points") else None
            state = _load_state(key) if resume else None
            if resume and state:
                last = resume["points"][-1]["n_edits"]
                vals, drift = state
                params = dict(lm.model.named_parameters())
                scope.apply(Patch({n: (v.to(params[n].device, torch.float64) - params[n].detach().double())
                                   .to(params[n].dtype) for n, v in vals.items()}, label="resume"), checkpoint=False)
                run.update(points=[p for p in resume["points"]], edit_seconds=resume.get("edit_seconds", 0.0),
                           resumed_from=last)
                applied = last
                say(f"resumed after {last} edits", last / cfg.n_edits)
            for a, b in _chunks(points, cfg.n_edits, batch):
                if b <= applied:
                    continue
                if should_stop is not None and should_stop():
                    run["stopped_after"] = applied
                    break
                say(f"edits {a + 1}-{b}/{cfg.n_edits}" if b - a > 1 else f"edit {b}/{cfg.n_edits}", a / cfg.n_edits)
                edit = m.compute(lm, [c.request() for c in cases[a:b]], hp, None)
                patch = edit.patch
                run["weight_only"] = run["weight_only"] and not patch.hooks and patch.rewrite is None
                if any(not bool(torch.isfinite(d).all()) for d in patch.deltas.values()):
                    run["collapsed"] = {"after": a, "reason": f"edit {b} produced a non-finite update; not applied"}
                    break
                scope.apply(patch, checkpoint=False)
                applied = b
                run["edit_seconds"] += float(edit.seconds)
                for name, d in patch.deltas.items():
                    d = d.detach().float()
                    drift[name] = drift[name] + d.to(drift[name].device) if name in drift else d.clone()
                if b in points:
                    say(f"measuring after {b} edits", b / cfg.n_edits)
                    pt = probe.point(b, drift, first=False)
                    run["points"].append(pt)
                    reason = probe.collapse(pt)
                    if run["weight_only"]:
                        _save_state(key, lm, drift)
                    cache.put(key, run)
                    if on_point is not None:
                        on_point(run)
                    if reason:
                        run["collapsed"] = {"after": b, "reason": reason}
                        break
            else:
                run["complete"] = True
        except BaseException:
            run["stopped_after"] = applied
            cache.put(key, run)  # a cut-off run keeps what it measured and resumes from it
            raise
    if run["collapsed"] or run["stopped_after"] is not None:
        run["complete"] = run["collapsed"] is not None  # a collapse is a finished result, a stop is not
    run = cache.put(key, run)
    if run["complete"]:
        _state_path(key).unlink(missing_ok=True)
    say("done", 1.0)
    return run
