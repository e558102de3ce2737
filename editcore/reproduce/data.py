"""The cases of every experiment: the public benchmark files (``--data`` or the shared data folder, or the
hub for online users where a loader supports it), else the bundled catalog, with a note saying which.

Each experiment reads the file its column is defined on (Yao et al. 2023's portability and locality
files, MQuAKE, Li et al. 2024's ConflictEdit and RoundEdit, zsRE for Figure 4); ``n`` cases are taken in
file order, so two runs with the same ``n`` see the same cases.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from .. import catalog
from ..benchmarks import BENCHMARKS, load_benchmark
from ..cases import Case, ConflictCase, MultiHopCase, RoundTripCase
from ..errors import EditScopeError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Experiment:
    name: str  # unit kind key
    table: str  # "table3", "table4", "figure4"
    benchmark: str  # key of editcore.benchmarks.BENCHMARKS
    file: str | None = None  # a file beside the benchmark's default one (ConflictEdit types)


EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in (
    Experiment("subject_replace", "table3", "portability_subject_replace"),
    Experiment("reverse_relation", "table3", "portability_inverse_relation"),
    Experiment("one_hop", "table3", "portability_one_hop"),
    Experiment("multihop", "table3", "mquake"),
    Experiment("conflict_reverse", "table3", "conflictedit", "reverse_edit.json"),
    Experiment("conflict_composite", "table3", "conflictedit", "composite_edit.json"),
    Experiment("locality", "table4", "locality_distracting"),
    Experiment("roundedit", "table4", "roundedit"),
    Experiment("figure4", "figure4", "zsre"),
)}


def _path(exp: Experiment, data_dir: str | None) -> Path | None:
    """The file for ``exp`` under ``data_dir`` (same layout as the shared folder), or None for the default."""
    if data_dir is None and exp.file is None:
        return None
    from ..paths import shared_data

    rel = Path(BENCHMARKS[exp.benchmark].default)
    if exp.file:
        rel = rel.with_name(exp.file)
    return Path(data_dir or shared_data()) / rel


def usable_cases(exp: Experiment, cases: list) -> list:
    """Only cases that can fill the experiment's cells (e.g. a One-Hop case needs a one-hop probe)."""
    if exp.name == "subject_replace":
        return [c for c in cases if isinstance(c, Case) and c.aliases]
    if exp.name == "reverse_relation":
        return [c for c in cases if isinstance(c, Case) and c.reverse is not None]
    if exp.name == "one_hop":
        return [c for c in cases if isinstance(c, Case) and c.one_hop_for(c.target_new)]
    if exp.name == "locality":
        return [c for c in cases if isinstance(c, Case) and (c.attributes or c.neighbourhood)]
    if exp.name == "multihop":
        return [c for c in cases if isinstance(c, MultiHopCase)]
    if exp.name.startswith("conflict_"):
        kind = exp.name.split("_", 1)[1]
        return [c for c in cases if isinstance(c, ConflictCase) and c.type == kind]
    if exp.name == "roundedit":
        return [c for c in cases if isinstance(c, RoundTripCase)]
    if exp.name == "figure4":
        # One edit per subject: a later edit of the same subject would overwrite an earlier one.
        seen: set[str] = set()
        out = []
        for c in cases:
            if isinstance(c, Case) and c.subject.casefold() not in seen:
                seen.add(c.subject.casefold())
                out.append(c)
        return out
    raise KeyError(exp.name)


def _catalog(exp: Experiment) -> list:
    if exp.name == "multihop":
        return list(catalog.load_multihop())
    if exp.name.startswith("conflict_"):
        return list(catalog.load_conflicts())
    if exp.name == "roundedit":
        return list(catalog.load_roundtrips())
    return list(catalog.load_catalog())


def experiment_cases(name: str, n: int, data_dir: str | None = None) -> tuple[list, str]:
    """``(cases, source)``: up to ``n`` usable cases of experiment ``name`` and where they came from."""
    exp = EXPERIMENTS[name]
    # Read more records than needed: some are skipped as unusable for this column.
    want = max(4 * n, n + 20)
    try:
        found = usable_cases(exp, load_benchmark(exp.benchmark, path=_path(exp, data_dir), limit=want))
        if found:
            return found[:n], f"{exp.benchmark}" + (f" ({exp.file})" if exp.file else "")
        reason = "no usable record"
    except EditScopeError as exc:
        reason = str(exc)
    log.warning("%s: falling back to the catalog (%s)", name, reason)
    return usable_cases(exp, _catalog(exp))[:n], f"catalog (public file unavailable: {reason})"
