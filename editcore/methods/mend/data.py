"""MEND's training data: edits with their equivalence prompts (paraphrases) and locality prompts.

MEND trains on triples (Mitchell et al. 2022a, §4): an edit ``(x_e, y_e)``, an *equivalence* example ``x_e'``
(a rephrasing; the post-edit model should give ``y_e`` there too) and a *locality* example ``x_loc`` whose
output should not move. Here:

* edits come from the shipped catalog (one per new target of a fact; facts the model knows first, from the
  committed knowledge check) and, when the files are present under ``../shared/data``, from CounterFact and
  zsRE (their own counterfactual targets);
* the equivalence examples are the edit prompt itself and one of its paraphrases;
* the locality examples are an unrelated prompt with its answer (zsRE's Natural Questions pairs, other facts'
  neighbourhood and attribute prompts) and, with ``hard_locality``, a neighbourhood prompt of the edited fact
  (same relation, another subject) with its true answer — an EditScope addition: MEND's paper draws locality
  examples from unrelated data only.

Held out from training: the catalog part the bench edits (``holdout="report"``: every fact of the report part
of ``data/catalog_check/split.json``, whether or not the model knows it) and a validation set of known facts of
the other part for the curve.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass

from ... import catalog, paths
from ...cases import answers_equal

log = logging.getLogger(__name__)

BENCH_SOURCES = ("counterfact", "zsre")


@dataclass(frozen=True)
class Example:
    id: str
    prompt: str  # the edit prompt, subject filled in
    target_new: str
    target_true: str
    paraphrases: tuple[str, ...]
    neighbours: tuple[tuple[str, str], ...]  # (prompt, true answer) of other subjects


@dataclass
class Data:
    train: list[Example]
    val: list[Example]
    held_out: list[str]  # catalog ids never trained on (the bench's facts and the validation facts)
    loc: list[tuple[str, str]]  # unrelated (prompt, answer) pairs
    counts: dict[str, int]


def examples_of(case, all_targets: bool = False) -> list[Example]:
    targets = case.targets_new if all_targets else case.targets_new[:1]
    neighbours = tuple((p.prompt, p.answer) for p in case.neighbourhood)
    return [Example(f"{case.id}#{i}", case.edit_prompt, t, case.target_true, tuple(case.paraphrases), neighbours)
            for i, t in enumerate(targets) if not answers_equal(t, case.target_true)]


def _benchmark_cases(name: str, limit: int) -> list:
    from ...benchmarks import BENCHMARKS, load_benchmark
    from ...cases import Case

    path = paths.shared_data() / BENCHMARKS[name].default
    if not path.is_file():
        log.info("MEND training: %s is not here (%s); skipped", name, path)
        return []
    return [c for c in load_benchmark(name, path=path, limit=limit) if isinstance(c, Case)]


def build(lm, sources: Sequence[str], known_only: bool, holdout: str, n_val: int, bench_limit: int,
          seed: int) -> Data:
    """The training and validation examples for ``lm`` (deterministic for the same arguments)."""
    from ...perfbench import known_facts, split_part

    cases = catalog.load_catalog()
    bench_ids = sorted(split_part(holdout)) if holdout != "none" else []
    known = catalog.known_facts(lm.name)
    if known is None:  # no committed check for this model: the bench's own rule decides what it knows
        known = {f.id for f in known_facts(lm, len(cases), part=None)} if known_only else set()
    rest = [c for c in cases if c.id not in set(bench_ids)]
    known_rest = [c for c in rest if c.id in known]
    val_cases = [c for c in (known_rest or rest) if c.neighbourhood and c.paraphrases]
    val_cases = random.Random(seed).sample(val_cases, min(n_val, len(val_cases)))
    held = set(bench_ids) | {c.id for c in val_cases}
    pool = [c for c in rest if c.id not in held]
    if known_only and sum(c.id in known for c in pool) >= 50:
        pool = [c for c in pool if c.id in known]
    counts = {}
    train: list[Example] = []
    if "catalog" in sources:
        for c in pool:
            train += examples_of(c, True)
        counts["catalog"] = len(train)
    loc: list[tuple[str, str]] = [(p.prompt, p.answer) for c in pool for p in (*c.neighbourhood, *c.attributes)]
    for name in BENCH_SOURCES:
        if name not in sources:
            continue
        got = [e for c in _benchmark_cases(name, bench_limit) for e in examples_of(c)]
        counts[name] = len(got)
        train += got
        if name == "zsre":  # its locality pairs are Natural Questions, unrelated to the edits
            loc += [n for e in got for n in e.neighbours]
    if not train:
        from ...errors import InputError

        raise InputError("MEND has no training examples (no catalog facts and no benchmark files)")
    val = [e for c in val_cases for e in examples_of(c)]
    return Data(train, val, sorted(held), loc, counts)


def draw(data: Data, seed: int, step: int, k: int, hard_locality: bool) -> tuple[Example, list[str], list]:
    """The ``k``-th edit of optimiser step ``step``: ``(example, equivalence prompts, locality pairs)``. A
    function of its arguments only, so a resumed run draws what an uninterrupted one would have."""
    rng = random.Random(f"{seed}/{step}/{k}")
    ex = data.train[rng.randrange(len(data.train))]
    outer = [ex.prompt] + ([rng.choice(ex.paraphrases)] if ex.paraphrases else [])
    loc = [data.loc[rng.randrange(len(data.loc))]] if data.loc else []
    if hard_locality and ex.neighbours:
        p, a = rng.choice(ex.neighbours)
        if not answers_equal(a, ex.target_new):
            loc.append((p, a))
    return ex, outer, loc
