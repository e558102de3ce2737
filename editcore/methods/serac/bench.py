"""SERAC's bench section (:data:`editcore.perfbench.SECTIONS`): the scope classifier's training and held-out
figures, and how it routes the bench's own prompts."""

from __future__ import annotations

from ..base import load_hparams
from . import METHOD, SeracHparams, SeracTrainHparams, classifier


def bench_section(lm, facts, common) -> dict:
    thp = load_hparams("serac", SeracTrainHparams, lm.name, prefix="train_")
    rep = classifier.current_report(thp.encoder)
    title = "SERAC: the scope classifier"
    if rep is None:
        return {"title": title, "columns": [], "rows": [],
                "note": "No trained classifier: run `python -m editcore train serac` before the bench."}
    held = rep["heldout"]
    row = {"encoder": rep["encoder"], "sentences": rep["sentences"], "pairs (train)": rep["pairs_train"],
           "pairs (held out)": rep["pairs_heldout"], "training s": rep["seconds"],
           "of which encoding s": rep["encode_seconds"], "precision": held["precision"], "recall": held["recall"],
           "F1": held["f1"], **{f"in scope: {k}": v for k, v in held["in_scope_rate"].items()}}
    # Routing of the bench's facts: each edited alone, its edit prompt and neighbourhood prompts asked.
    hp = load_hparams("serac", SeracHparams, lm.name)
    router = METHOD.router(lm, hp)
    edit_in = nb_in = nb_total = 0
    for f in facts:
        edit_in += router.route([f.request], f.request.text)[0] is not None
        for prompt, _ in f.neighbours:
            nb_in += router.route([f.request], prompt)[0] is not None
            nb_total += 1
    heldout = set(rep.get("heldout_facts", ()))
    trained_on_catalog = isinstance(rep["sources"].get("catalog"), int)
    in_training = sum(f.id not in heldout for f in facts) if trained_on_catalog else 0
    routing = {"bench edit prompts in scope": edit_in / len(facts) if facts else None,
               "bench neighbours in scope": nb_in / nb_total if nb_total else None,
               "bench facts the classifier trained on": f"{in_training}/{len(facts)}"}
    return {"title": title, "columns": list(row) + list(routing), "rows": [{**row, **routing}],
            "note": f"Classifier `{rep['key'][:12]}` trained {rep['trained_at']} on {rep['sources']}; held-out "
                    "figures are on pairs of facts left out of training (split by fact) at the threshold 0.5. "
                    "The bench's facts come from the catalog, most of whose facts the classifier was trained on "
                    "(last column), so its routing of them is optimistic; the held-out figures are the honest ones."}
