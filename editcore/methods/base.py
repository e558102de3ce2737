"""What every editing method looks like.

A method is a module in :mod:`editcore.methods` exposing one object that satisfies :class:`Method`:

* ``name`` / ``version`` (bump the version when results change: it is part of cache keys);
* ``info``: a :class:`MethodInfo` (title, reference, a few lines on what it does) that the Methods page, the
  pickers and the bench read, so adding a method touches no page;
* ``Hparams``: a frozen dataclass; per-model defaults live in ``editcore/hparams/<method>/<model>.json``;
* ``compute(lm, requests, hp, progress=None, *, speed=None) -> Edit``: works out the edit and returns it as a
  :class:`~editcore.scope.Patch` plus diagnostics. It must leave the model exactly as it found it
  (use :func:`editcore.scope.scratch` for temporary in-place changes). It runs inside the caller's
  ``lm.scope()``, so it sees earlier kept edits when editing sequentially. ``speed`` switches the exact fast
  paths (:class:`editcore.methods.speed.Speed`); ``None`` means all on.

Applying the edit is the scope's job, never the method's.

A method with a component trained per model (MEND's hypernetwork, SERAC's scope classifier) also satisfies
:class:`Trainable`: ``python -m editcore train <method> <model>`` and the dashboard use it, and ``compute``
raises :class:`~editcore.errors.InputError` saying how to train it when nothing is trained yet.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..errors import InputError
from ..scope import Patch
from ..types import Request

Progress = Callable[[str, float], None]
HPARAMS_DIR = Path(__file__).resolve().parents[1] / "hparams"


# The survey's (Hsueh et al. 2024, Table 1) families of methods.
CATEGORIES = ("fine-tuning", "locate-then-edit", "meta-learning", "memory-based", "prompting")


@dataclass(frozen=True)
class MethodInfo:
    """What a person needs to know about a method before choosing it."""

    title: str  # as the papers write it: "ROME", "FT-L"
    reference: str  # authors, year, title
    summary: str  # a few sentences in EditScope's own words (Markdown)
    category: str  # one of CATEGORIES
    changes_weights: bool = True  # False: an adaptor, memory or prompt leaves the weights alone
    sequential: bool = True  # edits can be stacked one after another (the Sequential page)
    adaptation: str = ""  # where EditScope departs from the paper, if it does; shown beside every result

    def __post_init__(self):
        if self.category not in CATEGORIES:
            raise ValueError(f"unknown method category {self.category!r}")


@dataclass
class Edit:
    """A computed edit: the patch the scope installs, plus what the method has to say about it."""

    method: str
    requests: tuple[Request, ...]
    patch: Patch
    seconds: float = 0.0
    diagnostics: dict[str, Any] = field(default_factory=dict)  # loss curve, steps, update norms, ...

    @property
    def warnings(self) -> list[str]:
        """Things the user should know about this edit (``diagnostics["warnings"]``), one sentence each."""
        return list(self.diagnostics.get("warnings", []))

    def summary(self) -> dict[str, Any]:
        return {"method": self.method, "seconds": round(self.seconds, 3), "update_norms": self.patch.norms(),
                **{k: v for k, v in self.diagnostics.items() if isinstance(v, (int, float, str, bool))}}


class Method(Protocol):
    name: str
    version: str
    info: MethodInfo
    Hparams: type
    batched: bool  # True if compute() handles many requests at once (MEMIT); else one at a time

    def compute(self, lm, requests: Sequence[Request], hp, progress: Progress | None = None, *,
                speed=None) -> Edit: ...


class Trainable(Protocol):
    """What a method that needs training adds to :class:`Method` (``needs_training = True``).

    Artefacts live under ``$EDITSCOPE_HOME/trained/<method>/`` as safetensors + JSON, keyed by the model's
    fingerprint and the training settings; training is resumable (checkpoints) and reports progress."""

    needs_training: bool
    TrainHparams: type  # a frozen dataclass like Hparams; per model in hparams/<method>/train_<model>.json

    def trained(self, lm) -> dict | None:
        """The trained artefact's report (when, how long, held-out figures, curve), or None if absent."""

    def estimate_training_seconds(self, lm, thp) -> float:
        """What training with ``thp`` will take on this machine, said before it starts."""

    def train(self, lm, thp, progress: Progress | None = None, *, resume: bool = True) -> dict:
        """Train (resuming from a checkpoint unless ``resume`` is off) and return the report ``trained`` gives."""


def needs_training(method) -> bool:
    return bool(getattr(method, "needs_training", False))


def hparam(default, *, lo=None, hi=None, choices=None, help: str = ""):
    """A dataclass field with a valid range; :func:`load_hparams` enforces it."""
    return field(default=default, metadata={"lo": lo, "hi": hi, "choices": choices, "help": help})


# Presets: "fast" is EditScope's defaults (early stops, few contexts, a small statistics sample);
# "reference" runs the method as its paper's released code does. A method offers the switch by having a
# ``preset`` hyper-parameter (:func:`preset_hparam`) and ``hparams/<method>/reference.json``, which
# :func:`load_hparams` lays over the model's file. The value is itself a hyper-parameter, so it is part of
# every cache key and of every result's hyper-parameters.
PRESETS = ("fast", "reference")
REFERENCE_FILE = "reference.json"


def preset_hparam():
    return hparam("fast", choices=PRESETS,
                  help="fast: EditScope's quicker defaults; reference: as the paper's released code runs it "
                       "(hparams/<method>/reference.json; slower)")


def preset_of(hp) -> str | None:
    """The preset that produced ``hp`` (None for a method without the switch)."""
    return getattr(hp, "preset", None)


def _json_values(path: Path) -> dict[str, Any]:
    return {k: v for k, v in json.loads(path.read_text()).items() if not k.startswith("_")}


def validate_hparams(hp) -> None:
    for f in dataclasses.fields(hp):
        value = getattr(hp, f.name)
        meta = f.metadata
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            if isinstance(v, float) and not math.isfinite(v):
                raise InputError(f"hyper-parameter {f.name} must be a finite number (got {v})")
            if meta.get("choices") is not None and v not in meta["choices"]:
                raise InputError(f"hyper-parameter {f.name} must be one of {list(meta['choices'])} (got {v!r})")
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                if meta.get("lo") is not None and v < meta["lo"]:
                    raise InputError(f"hyper-parameter {f.name} must be >= {meta['lo']} (got {v})")
                if meta.get("hi") is not None and v > meta["hi"]:
                    raise InputError(f"hyper-parameter {f.name} must be <= {meta['hi']} (got {v})")


def load_hparams(method: str, cls: type, model_name: str | None = None, overrides: dict | None = None,
                 prefix: str = ""):
    """Defaults of ``cls``, then ``hparams/<method>/<prefix><model>.json`` (else ``<prefix>default.json``), then,
    when the preset asked for (in ``overrides``, else in that file) is ``"reference"``, ``reference.json``,
    then ``overrides``. ``prefix="train_"`` reads a trainable method's training settings.

    Unknown keys and out-of-range values raise :class:`InputError` naming the key.
    """
    values: dict[str, Any] = {}
    folder = HPARAMS_DIR / method
    for candidate in ([model_name] if model_name else []) + ["default"]:
        path = folder / f"{prefix}{candidate}.json"
        if path.is_file():
            values.update(_json_values(path))
            break
    overrides = dict(overrides or {})
    if not prefix and overrides.get("preset", values.get("preset")) == "reference":
        ref = folder / REFERENCE_FILE
        if not ref.is_file():
            raise InputError(f"{method} has no reference preset (no {REFERENCE_FILE} in its hparams folder)")
        # The model's own choices that the reference code also leaves to the user (layer, clamp, lambda)
        # stay; the file sets the procedure (stopping, contexts, statistics).
        values.update(_json_values(ref))
        values["preset"] = "reference"
    values.update(overrides)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise InputError(f"unknown hyper-parameter {unknown[0]!r} for {method}; known: {', '.join(sorted(names))}")
    for f in dataclasses.fields(cls):
        if f.name in values and isinstance(values[f.name], list):
            values[f.name] = tuple(values[f.name])
    try:
        hp = cls(**values)
    except TypeError as exc:
        raise InputError(f"bad hyper-parameters for {method}: {exc}") from None
    validate_hparams(hp)
    return hp


def hparams_to_dict(hp) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(hp).items()}
