"""Which models the dashboard offers, loading one, and the unedited model's own continuation."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..errors import InputError
from .progress import Progress, exclusive, report

# Models registered in this process (the tests' tiny random models): name -> factory() -> LM.
_REGISTERED: dict[str, Callable[[], Any]] = {}


def register_model(name: str, factory: Callable[[], Any]) -> None:
    """Offer ``name`` in the model picker, built by ``factory()`` instead of the model registry. Registered
    models are listed before the built-in ones, and the first one registered is the default."""
    _REGISTERED[name] = factory


def unregister_model(name: str) -> None:
    _REGISTERED.pop(name, None)


def model_choices() -> list[str]:
    from ..models import BUILTIN

    return list(_REGISTERED) + list(BUILTIN)


def default_model() -> str:
    from ..models.registry import DEFAULT_MODEL

    return next(iter(_REGISTERED), DEFAULT_MODEL)


def load_model(name: str, progress: Progress | None = None):
    """The shared :class:`~editcore.models.LM` for a registered or built-in name, a local path or a hub id."""
    name = (name or "").strip()
    if name in _REGISTERED:
        return _REGISTERED[name]()
    from ..models import load_model as load

    return load(name, progress=progress)


def generate(lm, prompt: str, max_new_tokens: int = 24, progress: Progress | None = None) -> dict:
    """Greedy continuation of ``prompt`` by the unedited model."""
    from ..decoding import greedy

    if not prompt or not prompt.strip():
        raise InputError("the prompt is empty")
    if not 1 <= int(max_new_tokens) <= 256:
        raise InputError("max new tokens must be between 1 and 256")
    start = time.perf_counter()
    with exclusive(lm, progress), lm.scope():
        report(progress, "generating", 0.1)
        text = greedy(lm, [prompt], max_new_tokens=int(max_new_tokens))[0]
    return {"prompt": prompt, "continuation": text, "seconds": time.perf_counter() - start, "model": lm.name}
