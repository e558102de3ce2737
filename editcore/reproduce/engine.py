"""Engines that run units of work (:mod:`.units`): in this process (the default) or on a Ray cluster.

Both call the same :func:`run_unit_safe` on a model they load once, and hand back plain result rows, so
the metrics code and the numbers are the same whichever engine ran them. Caching and aggregation stay in
the driver (:mod:`.runner`).

Ray (``pip install 'editscope[ray]'``, i.e. the pinned ``ray`` of requirements-ray.txt): ``ray.init()``
starts a local cluster unless ``address`` names an existing one; each worker is an actor that builds
the model from a picklable factory once and then runs units one at a time.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator

from ..errors import EditScopeError, InputError

log = logging.getLogger(__name__)


def run_unit_safe(lm, unit: dict, progress=None) -> dict:
    """:func:`.units.run_unit`, with a failing unit turned into a row that says why (the report shows
    "n/a — error: ..." instead of losing the whole run)."""
    from ..methods import get_method
    from ..methods.base import needs_training
    from .units import run_unit

    try:
        m = get_method(unit["method"])
        if needs_training(m) and m.trained(lm) is None:
            return {"na": f"{m.name} needs training first (python -m editcore train {m.name} {lm.name})"}
        if unit["kind"] == "sequence" and not m.info.sequential:
            return {"na": f"{m.name} cannot stack edits one after another"}
        return run_unit(lm, unit, progress)
    except (EditScopeError, ValueError, RuntimeError) as exc:
        log.warning("unit %s/%s failed: %s", unit["experiment"], unit["method"], exc)
        return {"na": f"error: {type(exc).__name__}: {exc}"}


class InProcessEngine:
    """Runs units one after another on ``lm`` in this process."""

    name = "in-process"

    def __init__(self, lm):
        self.lm = lm

    def describe(self) -> dict:
        return {"model": self.lm.name, "fingerprint": self.lm.fingerprint, "workers": 1}

    def map(self, units: list[dict], progress=None) -> Iterator[tuple[int, dict]]:
        for i, unit in enumerate(units):
            yield i, run_unit_safe(self.lm, unit, progress)

    def close(self) -> None:
        pass


class _Worker:
    """A Ray actor body: one model per worker process, loaded when the actor starts."""

    def __init__(self, factory: Callable[[], object]):
        self.lm = factory()

    def describe(self) -> dict:
        return {"model": self.lm.name, "fingerprint": self.lm.fingerprint}

    def run(self, i: int, unit: dict) -> tuple[int, dict]:
        return i, run_unit_safe(self.lm, unit)


def _local_env() -> dict:
    """What a local worker needs to import this code and find the same caches and offline settings."""
    keys = ("EDITSCOPE_HOME", "EDITSCOPE_PRECACHE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE",
            "EDITSCOPE_SHARED_DATA")
    env = {k: os.environ[k] for k in keys if k in os.environ}
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
    return {"env_vars": env}


class RayEngine:
    """Runs units on Ray actors; ``workers`` actors of ``cpus`` CPUs (and ``gpus`` GPUs) each."""

    name = "ray"

    def __init__(self, factory: Callable[[], object], *, address: str | None = None, workers: int = 2,
                 cpus: float = 1, gpus: float = 0, local_cpus: int | None = None):
        try:
            import ray
        except ImportError:
            raise InputError("--engine ray needs the ray package: pip install -r requirements-ray.txt") from None
        if workers < 1:
            raise InputError("--workers must be at least 1")
        self.ray = ray
        self._started = False
        if not ray.is_initialized():
            kwargs: dict = {"include_dashboard": False, "log_to_driver": False}
            if address:
                kwargs["address"] = address
            else:  # a local cluster: workers must import this checkout and share its caches
                kwargs["runtime_env"] = _local_env()
                if local_cpus:
                    kwargs["num_cpus"] = int(local_cpus)
            ray.init(**kwargs)
            self._started = True
        actor = ray.remote(num_cpus=cpus, num_gpus=gpus)(_Worker)
        self.actors = [actor.remote(factory) for _ in range(int(workers))]

    def describe(self) -> dict:
        d = self.ray.get(self.actors[0].describe.remote())
        return {**d, "workers": len(self.actors)}

    def map(self, units: list[dict], progress=None) -> Iterator[tuple[int, dict]]:
        from ray.util import ActorPool

        pool = ActorPool(self.actors)
        yield from pool.map_unordered(lambda a, iu: a.run.remote(*iu), list(enumerate(units)))

    def close(self) -> None:
        for a in self.actors:
            self.ray.kill(a)
        self.actors = []
        if self._started:
            self.ray.shutdown()


def make_engine(kind: str, *, lm=None, factory: Callable[[], object] | None = None, **ray_options):
    if kind in ("inprocess", "in-process", "local"):
        if lm is None:
            if factory is None:
                raise InputError("the in-process engine needs a model")
            lm = factory()
        return InProcessEngine(lm)
    if kind == "ray":
        if factory is None:
            raise InputError("the ray engine needs a model factory")
        return RayEngine(factory, **ray_options)
    raise InputError(f"unknown engine {kind!r}; use inprocess or ray")

