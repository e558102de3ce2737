"""A hyper-network editor's training run as a report: the trained artefact's own report (curve, settings,
held-out bench facts) for one model, written as ``OUT.json`` and ``OUT.md``; for MALMEN also held-out facts
edited in batches of 1, 10 and 100 (``editcore.methods.malmen.bench``).

    OMP_NUM_THREADS=1 .venv/bin/python scripts/training_report.py malmen gemma-3-270m --batches \\
        --note "Edit of P17:paris -> United Kingdom: ..."
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

HOW_EDITED = {"malmen": "edited together, in one update"}
EXTRA_COLUMNS = {"ke": ("multiplier", "margin")}


def _table(rows: list[dict]) -> list[str]:
    cols = list(rows[0])

    def fmt(v):
        return "—" if v is None else f"{v:.3g}" if isinstance(v, float) else str(v)

    return ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols),
            *("| " + " | ".join(fmt(r[c]) for c in cols) + " |" for r in rows)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("method", choices=("mend", "ke", "malmen"))
    ap.add_argument("model")
    ap.add_argument("--out", default=None, help="path without suffix (default reports/<method>_training_<model>)")
    ap.add_argument("--batches", action="store_true", help="MALMEN: time batches of 1, 10 and 100 held-out facts")
    ap.add_argument("--note", action="append", default=[], help="a line added to the report (repeatable)")
    args = ap.parse_args(argv)

    import torch

    from editcore.methods import get_method
    from editcore.methods.mend.report import training_markdown
    from editcore.models import load_model

    lm = load_model(args.model)
    method = get_method(args.method)
    report = method.trained(lm)
    if report is None:
        print(f"no trained artefact: {method.train_command(lm)}", file=sys.stderr)
        return 2
    notes = [line for note in args.note for line in (note, "")][:-1]  # one paragraph each
    if args.batches:
        from editcore.methods.malmen.bench import batch_scaling

        rows = batch_scaling(lm)
        report["batch_scaling"] = rows
        notes += ["", "## Held-out facts edited in one batch", "",
                  f"Known facts of the catalog's report part (never trained on) edited by one `compute` each "
                  f"({torch.get_num_threads()} thread(s)); success = every new-target token top-1 on the edit "
                  "prompt, neighbourhood = CounterFact's NS on those facts.", "", *_table(rows)]
    report["notes"] = notes
    out = Path(args.out or f"reports/{args.method}_training_{lm.name}")
    out.with_suffix(".json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    out.with_suffix(".md").write_text(training_markdown(report, HOW_EDITED.get(args.method, "edited alone"),
                                                        EXTRA_COLUMNS.get(args.method, ()), tuple(notes)))
    print(out.with_suffix(".md"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
