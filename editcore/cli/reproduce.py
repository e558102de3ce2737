"""``reproduce`` sub-command: the survey's Tables 3-4 and Figure 4 on one model, and ``sequential``: one
long sequential-editing run with its curves.

    python -m editcore reproduce gemma-3-270m --methods ft,rome,memit --cases 50
    python -m editcore reproduce gemma-3-270m --engine ray --address auto --workers 8 --gpus-per-worker 1
    python -m editcore sequential gemma-3-270m --methods rome,memit --edits 500 --every 10 --batch 10
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from pathlib import Path

from ..errors import InputError
from .edit import parse_overrides
from .progress import Bar

log = logging.getLogger(__name__)


def _csv(text: str) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def _method_overrides(items: list[str]) -> dict:
    """``METHOD:KEY=VALUE`` items -> {method: {key: value}}."""
    out: dict = {}
    for item in items:
        method, sep, rest = item.partition(":")
        if not sep or not method.strip():
            raise InputError(f"--hparam expects METHOD:KEY=VALUE (got {item!r})")
        out.setdefault(method.strip().lower(), {}).update(parse_overrides([rest]))
    return out


def _engine_options(p) -> None:
    p.add_argument("--engine", default="inprocess", choices=("inprocess", "ray"),
                   help="where units run: this process (default) or a Ray cluster (optional extra)")
    p.add_argument("--address", help="Ray: attach to this cluster (e.g. 'auto' or ray://host:10001); "
                                     "default: start a local one")
    p.add_argument("--workers", type=int, default=2, help="Ray: worker actors, each loads the model once")
    p.add_argument("--cpus-per-worker", type=float, default=1)
    p.add_argument("--gpus-per-worker", type=float, default=0)


def register(sub) -> None:
    from ..reproduce.data import EXPERIMENTS
    from ..reproduce.runner import FIGURE4_STEPS, SURVEY_METHODS

    p = sub.add_parser("reproduce", help="the survey's Tables 3-4 and Figure 4 on a model")
    p.add_argument("model")
    p.add_argument("--methods", default=",".join(SURVEY_METHODS),
                   help="comma-separated methods (default: the survey's eight; unregistered ones become n/a)")
    p.add_argument("--cases", type=int, default=50, help="cases per benchmark (default 50)")
    p.add_argument("--data", help="folder laid out like ../shared/data (default: the shared data folder)")
    p.add_argument("--experiments", default=",".join(EXPERIMENTS), help="subset of: " + ", ".join(EXPERIMENTS))
    p.add_argument("--figure4-steps", default=",".join(map(str, FIGURE4_STEPS)),
                   help="edit counts Figure 4 is measured at (default 0,10,20,30,40)")
    p.add_argument("--figure4-items", type=int, default=20,
                   help="items per Figure 4 task (NQ, SST-2, GSM8K; SAMSum gets a quarter)")
    p.add_argument("--hparam", action="append", default=[], metavar="METHOD:KEY=VALUE",
                   help="override a method's hyper-parameter, repeatable")
    p.add_argument("--out", default="reports", help="folder for the report (default reports/)")
    p.add_argument("--note", default="", help="a line put under the report's title (e.g. the run's size)")
    p.add_argument("--no-cache", action="store_true", help="recompute every unit")
    p.add_argument("--report-only", action="store_true",
                   help="run nothing: write the report of the units already in the cache")
    _engine_options(p)
    p.set_defaults(func=_reproduce)

    s = sub.add_parser("sequential", help="many kept edits in a row, measured every k edits")
    s.add_argument("model")
    s.add_argument("--methods", default="rome,memit")
    s.add_argument("--edits", type=int, default=100)
    s.add_argument("--every", type=int, default=10)
    s.add_argument("--batch", type=int, default=1, help="edits per update for methods that batch (MEMIT)")
    s.add_argument("--source", default="counterfact", help="benchmark the facts come from, or 'catalog'")
    s.add_argument("--probe-items", type=int, default=4, help="items per downstream probe at each point")
    s.add_argument("--collapse-factor", type=float, default=10.0,
                   help="stop when perplexity exceeds this multiple of the unedited value")
    s.add_argument("--hparam", action="append", default=[], metavar="METHOD:KEY=VALUE")
    s.add_argument("--out", default="reports")
    s.add_argument("--no-cache", action="store_true")
    s.add_argument("--report-only", action="store_true",
                   help="run nothing: write the report of what the cache holds (a cut-off run shows where it stopped)")
    s.set_defaults(func=_sequential)


def _reproduce(args) -> int:
    from ..models import load_model
    from ..reproduce import ReproConfig, reproduce
    from ..reproduce.engine import make_engine
    from ..reproduce.report import write_report

    try:
        steps = tuple(int(s) for s in _csv(args.figure4_steps))
    except ValueError:
        raise InputError("--figure4-steps expects numbers like 0,10,20") from None
    if not 1 <= args.figure4_items <= 200:
        raise InputError("--figure4-items must be between 1 and 200")
    k = args.figure4_items
    cfg = ReproConfig(methods=tuple(_csv(args.methods)), cases=args.cases, data_dir=args.data,
                      experiments=tuple(_csv(args.experiments)), figure4_steps=steps,
                      figure4_sizes={"qa": k, "sentiment": k, "arithmetic": k, "summarisation": max(1, k // 4),
                                     "piqa": 0}, overrides=_method_overrides(args.hparam))
    if args.engine == "ray":
        engine = make_engine("ray", factory=functools.partial(load_model, args.model), address=args.address,
                             workers=args.workers, cpus=args.cpus_per_worker, gpus=args.gpus_per_worker)
    else:
        engine = make_engine("inprocess", lm=load_model(args.model, progress=Bar()))
    try:
        result = reproduce(engine, cfg, progress=Bar(), use_cache=not args.no_cache, run=not args.report_only)
    finally:
        engine.close()
    paths = write_report(result, args.out, title_note=args.note)
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


def _sequential(args) -> int:
    from ..cases.resolve import benchmark_cases
    from ..catalog import load_catalog
    from ..models import load_model
    from ..reproduce.data import EXPERIMENTS, usable_cases
    from ..reproduce.sequential import SeqConfig, cached_run, sequential_run
    from ..reproduce.seqreport import write_sequential

    pool = load_catalog() if args.source == "catalog" else benchmark_cases(args.source, limit=max(4 * args.edits, 200))
    cases = usable_cases(EXPERIMENTS["figure4"], pool)  # one edit per subject
    lm = load_model(args.model, progress=Bar())
    overrides = _method_overrides(args.hparam)
    k = args.probe_items
    runs = {}
    for method in _csv(args.methods):
        cfg = SeqConfig(method=method, n_edits=args.edits, every=args.every, batch=args.batch,
                        overrides=overrides.get(method, {}), collapse_factor=args.collapse_factor,
                        probe_sizes={"sentiment": k, "piqa": k, "qa": k, "arithmetic": k, "summarisation": 0})
        if args.report_only:
            hit = cached_run(lm, cases, cfg)
            if hit is None:
                print(f"{method}: nothing in the cache for this run", file=sys.stderr)
            else:
                runs[method] = hit
        else:
            runs[method] = sequential_run(lm, cases, cfg, progress=Bar(), use_cache=not args.no_cache)
    if not runs:
        raise InputError("nothing to report: no method of this run is in the cache")
    paths = write_sequential(lm.name, args.source, runs, Path(args.out))
    print(json.dumps({k: str(v) for k, v in paths.items()}))
    return 0
