"""Loaders for public knowledge-editing benchmarks and downstream task sets.

Every editing benchmark becomes :class:`~editcore.cases.Case` records (or the multi-hop, conflict and
round-trip kinds), so methods and metrics never see a source's own schema. Downstream sets become small
typed records (:class:`ChoiceItem`, :class:`QAItem`, :class:`SummaryItem`).

Local files are read with the standard ``json``/``csv`` modules: the sources are single JSON arrays or
JSON lines with nested, ragged fields that ``datasets`` would coerce into a columnar schema without
adding anything. ``datasets`` is used only when no path is given, the machine is online and the set has
a hub id (the downstream sets).

One module per family of sources (:mod:`.counterfact`, :mod:`.zsre`, :mod:`.yao2023`, :mod:`.mquake`,
:mod:`.ripple`, :mod:`.pitfalls`, :mod:`.downstream`); the rules they share for reading files and
skipping bad records are in :mod:`._io`. ``load_benchmark(name, path=None, limit=None)`` is the front
door; ``BENCHMARKS`` lists the names.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import EditScopeError, InputError
from ..paths import shared_data
from .counterfact import load_counterfact, load_counterfact_plus
from .downstream import (ChoiceItem, QAItem, SummaryItem, from_hub_rows, load_gsm8k, load_nq_open, load_piqa,
                         load_samsum, load_sst2)
from .mquake import load_mquake
from .pitfalls import load_conflictedit, load_roundedit
from .ripple import load_ripple_edits
from .yao2023 import load_yao2023
from .zsre import load_zsre

__all__ = ["BENCHMARKS", "Benchmark", "ChoiceItem", "QAItem", "SummaryItem", "load_benchmark",
           "load_conflictedit", "load_counterfact", "load_counterfact_plus", "load_gsm8k", "load_mquake",
           "load_nq_open", "load_piqa", "load_ripple_edits", "load_roundedit", "load_samsum", "load_sst2",
           "load_yao2023", "load_zsre"]


@dataclass(frozen=True)
class Benchmark:
    name: str
    loader: Callable[..., list]
    default: str  # path under the shared data folder
    description: str
    hub: tuple[str, ...] = ()  # datasets.load_dataset arguments (id, config, split) for online users


def _bm(name, loader, default, description, hub=()):
    return Benchmark(name, loader, default, description, tuple(hub))


_YAO = "yao2023_portability_locality"
BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (
    _bm("counterfact", load_counterfact, "counterfact/counterfact.json", "CounterFact (ROME schema or EasyEdit split)"),
    _bm("counterfact_plus", load_counterfact_plus, "counterfact_plus/counterfact_plus.json",
        "CounterFact+ with distracting neighbourhood prompts"),
    _bm("zsre", load_zsre, "zsre/zsre_mend_eval.subset.json", "zsRE, MEND eval schema"),
    _bm("mquake", load_mquake, "mquake/MQuAKE-hard.json", "MQuAKE (CF-3k, T or hard)"),
    _bm("ripple_edits", load_ripple_edits, "ripple_edits/popular.json", "RippleEdits (popular/random/recent)"),
    _bm("conflictedit", load_conflictedit, "pitfalls/GPT2-XL/reverse_edit.json",
        "ConflictEdit reverse/composite/coverage (Li et al. 2024)"),
    _bm("roundedit", load_roundedit, "pitfalls/GPT2-XL/easy.json", "RoundEdit easy/hard (Li et al. 2024)"),
    _bm("portability_one_hop", load_yao2023, f"{_YAO}/portability/one_hop/counterfact_portability_gpt4.json",
        "Yao et al. 2023 One-Hop portability (CounterFact or zsRE file)"),
    _bm("portability_subject_replace", load_yao2023,
        f"{_YAO}/portability/subject_replace/counterfact_subject_replace.json",
        "Yao et al. 2023 Subject-Replace (CounterFact or zsRE file)"),
    _bm("portability_inverse_relation", load_yao2023, f"{_YAO}/portability/inverse_relation/zsre_inverse_relation.json",
        "Yao et al. 2023 Inverse-Relation (zsRE)"),
    _bm("locality_distracting", load_yao2023, f"{_YAO}/locality/counterfact_distracting_neighbor.json",
        "Yao et al. 2023 Other-Attribution and Distract-Neighbour (CounterFact)"),
    _bm("piqa", load_piqa, "downstream/piqa/piqa_valid.first200.jsonl", "PIQA validation (+ labels file)",
        ("piqa", None, "validation")),
    _bm("sst2", load_sst2, "downstream/sst2/test-SentimentAnalysis.first200.tsv", "SST-2 validation (TSV)",
        ("glue", "sst2", "validation")),
    _bm("gsm8k", load_gsm8k, "downstream/gsm8k/test-reasoning.first200.jsonl", "GSM8K test",
        ("openai/gsm8k", "main", "test")),
    _bm("nq_open", load_nq_open, "downstream/nq_open/test-OpenDomainQA.first200.jsonl", "Natural Questions open",
        ("nq_open", None, "validation")),
    _bm("samsum", load_samsum, "downstream/samsum/test-summarization.first200.json", "SAMSum test",
        ("samsum", None, "test")),
)}


def _offline() -> bool:
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes")
               for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _from_hub(bench: Benchmark, expected: Path, limit: int | None) -> list:
    """Online fallback for the downstream sets: load the split from the hub and map rows like files."""
    try:
        import datasets
    except ImportError:  # pragma: no cover - datasets is a dependency
        raise EditScopeError(f"{bench.name}: no local file at {expected} and the datasets package is missing") from None
    hub_id, config, split = bench.hub
    try:
        ds = datasets.load_dataset(hub_id, config, split=split if limit is None else f"{split}[:{limit}]")
    except Exception as exc:  # noqa: BLE001 - any hub failure is reported as one line
        raise EditScopeError(f"{bench.name}: no local file at {expected} and the hub failed ({type(exc).__name__})") from None
    return from_hub_rows(bench.name, list(ds))


def load_benchmark(name: str, path: str | Path | None = None, limit: int | None = None, **kwargs) -> list:
    """Load benchmark ``name`` from ``path`` (default: its file under the shared data folder)."""
    bench = BENCHMARKS.get(name)
    if bench is None:
        raise InputError(f"unknown benchmark {name!r}; choose one of {', '.join(sorted(BENCHMARKS))}")
    if limit is not None and limit < 0:
        raise InputError("the limit must not be negative")
    if path is None:
        expected = shared_data() / bench.default
        if not expected.is_file():
            if bench.hub and not _offline():
                return _from_hub(bench, expected, limit)
            raise EditScopeError(f"{bench.name}: no path given and the expected local file {expected} is missing"
                                 + ("" if bench.hub else "; pass --path to your copy"))
        p = expected
    else:
        p = Path(path)
        if not p.is_file():
            raise EditScopeError(f"{bench.name}: the file {p} does not exist")
    return bench.loader(p, limit=limit, **kwargs)
