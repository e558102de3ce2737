"""What the pickers offer: editing methods and their hyper-parameters, catalog facts and benchmark cases."""

from __future__ import annotations

import dataclasses
import hashlib
import logging

from .. import catalog, methods, paths
from ..benchmarks import BENCHMARKS
from ..cases import Case
from ..cases.resolve import benchmark_cases
from ..errors import InputError
from ..results_cache import default_cache, make_key
from .progress import Progress, exclusive, report

log = logging.getLogger(__name__)


# ==== methods ==================================================================================
def list_methods() -> list[dict]:
    """Every registered method with what its ``MethodInfo`` says (the pickers and the Methods page read it)."""
    from ..methods.base import needs_training

    out = []
    for name in methods.available():
        try:
            m = methods.get_method(name)
            out.append({"name": m.name, "version": str(m.version), "batched": bool(m.batched),
                        "needs_training": needs_training(m), **dataclasses.asdict(m.info)})
        except Exception:  # a half-landed method must not break the picker
            log.exception("method %s failed to load", name)
    return out


def training_status(lm, method: str) -> dict:
    """Whether ``method`` can edit ``lm`` now: ``{"method", "needs_training", "trained", "command", "report"}``.
    A method that needs training (MEND) and has no trained artefact for this model says which command trains
    one; the dashboard never trains by itself. ``report`` is the artefact's summary (plain numbers)."""
    from ..methods.base import needs_training

    m = methods.get_method(method)
    if not needs_training(m):
        return {"method": m.name, "needs_training": False, "trained": True, "command": "", "report": None}
    report = m.trained(lm)
    summary = None if report is None else {k: report.get(k) for k in ("name", "steps", "seconds", "finished")}
    return {"method": m.name, "needs_training": True, "trained": report is not None,
            "command": f"python -m editcore train {m.name} {lm.name}", "report": summary}


def method_and_hparams(method: str, model_name: str | None, overrides: dict | None):
    """``(method, hyper-parameters, the same as a plain dict)``: the method's file for this model, then
    ``overrides`` (validated: a bad value is an :class:`InputError`)."""
    from ..methods.base import hparams_to_dict, load_hparams

    m = methods.get_method(method)
    hp = load_hparams(m.name, m.Hparams, model_name, overrides or {})
    return m, hp, hparams_to_dict(hp)


def method_hparams(method: str, model_name: str | None, overrides: dict | None = None) -> list[dict]:
    """The method's hyper-parameters for this model: name, value, valid range/choices, help text."""
    _m, hp, values = method_and_hparams(method, model_name, overrides)
    rows = []
    for f in dataclasses.fields(hp):
        v = values[f.name]
        kind = ("bool" if isinstance(v, bool) else "int" if isinstance(v, int) else "float" if isinstance(v, float)
                else "list" if isinstance(v, list) else "str")
        rows.append({"name": f.name, "value": v, "kind": kind, "lo": f.metadata.get("lo"), "hi": f.metadata.get("hi"),
                     "choices": list(f.metadata["choices"]) if f.metadata.get("choices") is not None else None,
                     "help": f.metadata.get("help", "")})
    return rows


# ==== facts ====================================================================================
def known_case_ids(lm, progress: Progress | None = None) -> set[str]:
    """Ids of catalog facts the model already knows (its greedy answer matches the true object).

    Uses the committed per-model check (``editcore.catalog.known_facts``) when there is one; otherwise
    runs the check once for this model and keeps the answer in the results cache.
    """
    known = catalog.known_facts(lm.name)
    if known is not None:
        return set(known)
    cache = default_cache()
    key = make_key(kind="known_facts", fingerprint=lm.fingerprint, extra={"catalog": _catalog_digest()})
    if (hit := cache.get(key)) is not None:
        return set(hit["ids"])
    with exclusive(lm, progress), lm.scope():
        report(progress, "checking which catalog facts this model knows (once per model)", 0.0)
        checked = catalog.check_model(lm, progress=(lambda done, total: report(progress, "checking facts",
                                                                               done / max(total, 1))))
    ids = sorted(fid for fid, entry in checked["facts"].items() if entry.get("knows_fact"))
    cache.put(key, {"ids": ids})
    return set(ids)


def _catalog_digest() -> str:
    """Part of the known-facts cache key: a changed catalog is checked again."""
    path = catalog.DATA_DIR / "facts.jsonl"
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else ""


def _label(c: Case) -> str:
    return f"{c.edit_prompt} {c.target_true} → {' / '.join(c.targets_new)}"


def catalog_entries(lm=None, known_only: bool = False, query: str = "") -> list[dict]:
    """Searchable, plain-data list of catalog facts for the fact picker."""
    cases = catalog.load_catalog()
    if known_only:
        if lm is None:
            raise InputError("the 'known by this model' filter needs a loaded model")
        ids = known_case_ids(lm)
        cases = [c for c in cases if c.id in ids]
    q = query.strip().casefold()
    out = []
    for c in cases:
        label = _label(c)
        if q and q not in label.casefold() and q not in c.id.casefold():
            continue
        out.append({"id": c.id, "label": label, "prompt": c.prompt, "subject": c.subject,
                    "target_true": c.target_true, "targets_new": list(c.targets_new), "relation": c.relation})
    return out


# Benchmarks that hold other kinds of cases (multi-hop, conflicts, round trips) are for the pitfall page.
# Downstream task sets (PIQA, SST-2, ...) are not edits at all.
_NOT_SINGLE_FACT = ("mquake", "conflictedit", "roundedit", "ripple_edits", "piqa", "sst2", "gsm8k", "nq_open",
                    "samsum")


def benchmark_names() -> list[str]:
    """Single-fact public benchmarks whose local file is present."""
    data = paths.shared_data()
    return [name for name, b in BENCHMARKS.items() if name not in _NOT_SINGLE_FACT and (data / b.default).is_file()]


def benchmark_entries(name: str, limit: int = 50, path: str | None = None) -> list[dict]:
    return [{"id": c.id, "label": _label(c), "targets_new": list(c.targets_new), "target_true": c.target_true}
            for c in benchmark_cases(name, limit, path)]
