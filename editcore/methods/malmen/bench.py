"""``make bench``: MALMEN edits held-out catalog facts in batches of growing size, each batch one update."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

SIZES = (1, 10, 100)


def batch_scaling(lm, sizes=SIZES) -> list[dict]:
    """For each size ``n``: ``n`` known facts of the catalog's report part (never trained on) edited in one
    compute; its seconds, and the edited model judged on those facts (every target token top-1, and
    CounterFact's neighbourhood score)."""
    from ...perfbench import judge, known_facts
    from ..base import load_hparams
    from .method import METHOD

    pool = known_facts(lm, max(sizes))
    held = METHOD.held_out_facts(lm) or set()
    pool = [f for f in pool if f.id in held]
    hp = load_hparams(METHOD.name, METHOD.Hparams, lm.name)
    rows = []
    for n in sorted({min(s, len(pool)) for s in sizes if pool}):
        facts = pool[:n]
        with lm.scope() as scope:
            edit = METHOD.compute(lm, [f.request for f in facts], hp)
            scope.apply(edit.patch, checkpoint=False)
            judged = judge(lm, facts)
        ns = [j["ns"] for j in judged if j["ns"] is not None]
        rows.append({"edits": n, "seconds": edit.seconds, "s/edit": edit.seconds / n,
                     "success": sum(j["token_top1"] for j in judged) / n,
                     "neighbourhood": sum(ns) / len(ns) if ns else None,
                     "update norm": edit.diagnostics["update_norm"], "weights updated": len(edit.patch.deltas)})
        log.info("MALMEN batch of %d: %s", n, rows[-1])
    return rows


def bench_section(lm, facts, common) -> dict:
    from ..mend.report import curve_section
    from .method import METHOD

    if METHOD.trained(lm) is None:
        return curve_section(METHOD, lm)
    return {"title": "MALMEN: held-out facts edited in one batch", "rows": batch_scaling(lm),
            "columns": ["edits", "seconds", "s/edit", "success", "neighbourhood", "update norm", "weights updated"],
            "note": "Each row: that many known facts of the catalog's report part (which training never saw) "
                    "edited by one compute, giving one update per edited weight; success = every token of the "
                    "new target top-1 on the edit prompt; neighbourhood = CounterFact's NS on those facts."}
