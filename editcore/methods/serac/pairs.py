"""Edit/query pairs that SERAC's scope classifier learns from, split into training and held-out by fact.

For each fact (an edit ``"<edit prompt> <new target>"``):

* **in scope**: the edit prompt itself and its paraphrases;
* **out of scope**: its neighbourhood prompts (other subjects, same relation: the hard negatives), prompts
  about other attributes of the same subject (catalog), and prompts of other, randomly drawn facts.

One-hop prompts (the edit's consequences) are left out: whether they should be routed to the edit is what
the portability metrics measure, not something to teach.

Sources: the catalog, and CounterFact and zsRE when ``../shared/data`` has them (a missing file is noted in
the report, not an error).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from ...errors import EditScopeError

log = logging.getLogger(__name__)

SOURCES = ("catalog", "counterfact", "zsre")
KINDS = ("edit prompt", "paraphrase", "neighbour", "attribute", "unrelated")


@dataclass(frozen=True)
class Pairs:
    """Unique ``texts`` and pairs of indices into them: ``edit[i]`` with ``query[i]`` has ``label[i]``
    (1 = in scope); ``kind[i]`` in :data:`KINDS`; ``heldout[i]`` marks pairs of held-out facts."""

    texts: tuple[str, ...]
    edit: tuple[int, ...]
    query: tuple[int, ...]
    label: tuple[int, ...]
    kind: tuple[str, ...]
    heldout: tuple[bool, ...]
    sources: dict  # source -> number of facts used, or the reason it is missing
    heldout_facts: tuple[str, ...]

    @property
    def digest(self) -> str:
        payload = [self.texts, self.edit, self.query, self.label, self.heldout]
        return hashlib.sha256(json.dumps(payload, separators=(",", ":")).encode()).hexdigest()


def _cases(source: str, limit: int) -> list:
    from ...cases import Case

    if source == "catalog":
        from ...catalog import load_catalog

        cases = load_catalog()
    else:
        from ...benchmarks import load_benchmark

        cases = [c for c in load_benchmark(source) if isinstance(c, Case)]
    return list(cases)[:limit]


def build_pairs(sources: Sequence[str], max_facts: int, neighbours: int, unrelated: int, heldout_fraction: float,
                seed: int) -> Pairs:
    texts: dict[str, int] = {}

    def idx(t: str) -> int:
        return texts.setdefault(t, len(texts))

    rows: list[tuple[int, int, int, str, bool]] = []
    used: dict = {}
    heldout_ids: list[str] = []
    rng = random.Random(seed)
    for source in sources:
        try:
            cases = _cases(source, max_facts)
        except EditScopeError as exc:
            used[source] = f"missing ({exc})"
            log.warning("SERAC training without %s: %s", source, exc)
            continue
        used[source] = len(cases)
        prompts = [c.edit_prompt for c in cases] + [p for c in cases for p in c.paraphrases]
        for c in cases:
            held = zlib.crc32(f"{seed}:{c.id}".encode()) % 10_000 < heldout_fraction * 10_000
            if held:
                heldout_ids.append(c.id)
            e = idx(f"{c.edit_prompt} {c.target_new}")
            subject = c.subject.casefold()
            queries = [(c.edit_prompt, 1, "edit prompt")] + [(p, 1, "paraphrase") for p in c.paraphrases]
            queries += [(p.prompt, 0, "neighbour") for p in c.neighbourhood[:neighbours]
                        if subject not in p.prompt.casefold()]
            queries += [(p.prompt, 0, "attribute") for p in c.attributes]
            others = [p for p in rng.sample(prompts, min(len(prompts), 4 * unrelated + 4))
                      if subject not in p.casefold()][:unrelated]
            queries += [(p, 0, "unrelated") for p in others]
            rows.extend((e, idx(q), label, kind, held) for q, label, kind in queries)
    if not rows:
        raise EditScopeError("no training pairs: none of the sources could be read")
    return Pairs(tuple(texts), *(tuple(col) for col in zip(*rows)), used, tuple(heldout_ids))
