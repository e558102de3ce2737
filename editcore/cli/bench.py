"""``python -m editcore bench --out reports``: speed and quality of every registered method on the bundled
models, on 30 known facts of the catalog's report part (see :mod:`editcore.perfbench`); ``--full`` takes
every known report fact and adds the speed-up tables. ``--sweep METHOD --model NAME`` runs a sweep on the tune
part instead (layers for rome/memit; ``--vary KEY=V1,V2`` sweeps any hyper-parameter of any method)."""

from __future__ import annotations

import json
import logging
import shlex
import sys
from pathlib import Path

from ..errors import InputError

log = logging.getLogger(__name__)


def register(sub) -> None:
    p = sub.add_parser("bench", help="time and score the editing methods on the bundled models",
                       description="Writes OUT/bench.json and OUT/bench.md (or, with --sweep, a layer-sweep table).")
    p.add_argument("--out", default="reports", help="output folder (default: reports)")
    p.add_argument("--models", nargs="+", default=None, help="models to bench (default: the bundled ones)")
    p.add_argument("--methods", nargs="+", default=None, help="methods (default: every registered one)")
    p.add_argument("--facts", type=int, default=None,
                   help="known catalog facts per model (bench: of the report part, default 30; sweeps: of the "
                        "tune part, default 10; 0 = all)")
    p.add_argument("--part", choices=("tune", "report", "all"), default=None,
                   help="catalog part the facts come from (default: report for the bench, tune for sweeps)")
    p.add_argument("--full", action="store_true",
                   help="every known report fact and the extra tables (about an hour on 2 CPU cores)")
    p.add_argument("--extras", action="store_true", help="add the speed-up and statistics-count tables")
    p.add_argument("--stats-samples", type=int, default=None, help="tokens for the layer statistics")
    p.add_argument("--corpus", default=None,
                   help="statistics corpus: a local text file, 'hf:<dataset>', 'model' or 'auto' (default: "
                        "../shared/data/wikitext/wiki.test.raw when present, else auto)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--sweep", default=None, metavar="METHOD",
                   help="run a sweep of METHOD instead (layers for rome/memit; any method with --vary)")
    p.add_argument("--model", default="gemma-3-270m", help="model for --sweep")
    p.add_argument("--layers", default=None,
                   help="--sweep candidates: '2,4,6' (ROME) or '2-6,4-8' (MEMIT ranges); default: every 2nd layer")
    p.add_argument("--hparam", action="append", default=[], metavar="KEY=VALUE", help="overrides for --sweep")
    p.add_argument("--vary", default=None, metavar="KEY=V1,V2,...",
                   help="--sweep another hyper-parameter instead of the layer (JSON values), e.g. clamp_norm_factor=0.5,1,4")
    p.add_argument("--merge", action="store_true",
                   help="merge this run's rows (--methods, --models) into OUT/bench.json instead of replacing it")
    p.add_argument("--batch", action="store_true",
                   help="--sweep: edit all facts in one batch (MEMIT) instead of each alone")
    p.set_defaults(func=run)


def _default_corpus() -> str | None:
    from ..paths import shared_data

    wiki = shared_data() / "wikitext" / "wiki.test.raw"
    return str(wiki) if wiki.is_file() else None


def _parse_layers(spec: str | None, method: str, n_layers: int) -> list:
    if not spec:
        singles = list(range(1, n_layers - 1, 2))
        return singles if method == "rome" else [list(range(max(0, x - 4), x + 1)) for x in singles if x >= 4]
    out = []
    for part in spec.split(","):
        part = part.strip()
        try:
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-"))
                out.append(list(range(lo, hi + 1)))
            else:
                out.append(int(part) if method == "rome" else [int(part)])
        except ValueError:
            raise InputError(f"bad layer spec {part!r}: use '6' or '4-8'") from None
    return out


def run(args) -> int:
    import torch

    from ..perfbench import environment, known_facts, run_bench, sweep, sweep_markdown
    from .edit import parse_overrides
    from .progress import Bar

    if args.threads:
        torch.set_num_threads(args.threads)
    corpus = args.corpus or _default_corpus()
    if args.sweep:
        from ..models import load_model

        from ..methods import get_method
        from ..methods import layer_stats as stats

        lm = load_model(args.model)
        uses_stats = "stats_corpus" in get_method(args.sweep).Hparams.__dataclass_fields__
        overrides = {**({"stats_corpus": corpus or "auto"} if uses_stats else {}), **parse_overrides(args.hparam)}
        if args.stats_samples is not None and uses_stats:
            overrides["stats_samples"] = args.stats_samples

        part = None if args.part == "all" else (args.part or "tune")
        facts = known_facts(lm, 10 if args.facts is None else args.facts, part=part)
        if args.vary:
            key, _, spec = args.vary.partition("=")
            try:
                values = [json.loads(v) for v in spec.split(",") if v.strip()]
            except ValueError:
                raise InputError(f"bad --vary values {spec!r}: use JSON values separated by commas") from None
            if not key or not values:
                raise InputError("--vary needs KEY=V1,V2,...")
            suffix = f"_{key}"
        else:
            if args.sweep not in ("rome", "memit"):
                raise InputError(f"--sweep {args.sweep} needs --vary KEY=V1,V2 (layer sweeps are for rome and memit)")
            key = "layers" if args.sweep == "memit" else "layer"
            values = _parse_layers(args.layers, args.sweep, lm.adapter.n_layers)
            suffix = ""
        layer_key = "layers" if args.sweep == "memit" else "layer"
        layer_sets = values if key == layer_key else [overrides.get(layer_key)]
        flat = sorted({x for s in layer_sets if s not in (None, -1) for x in (s if isinstance(s, list) else [s])})
        # All candidate layers' statistics in one pass (cheaper than one pass per layer).
        if flat and uses_stats:
            stats.second_moments(lm, flat, overrides.get("stats_samples", stats.DEFAULT_TOKENS),
                                 overrides["stats_corpus"], Bar())
        rows = sweep(lm, args.sweep, key, values, facts, overrides, Bar(), batch=args.batch)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        command = "python -m editcore bench " + " ".join(shlex.quote(a) for a in sys.argv[2:])
        md = sweep_markdown(lm.name, args.sweep, key, rows, facts, overrides, environment(lm), command,
                            batch=args.batch, part=part)
        suffix += "_batch" if args.batch else ""
        (out / f"sweep_{args.sweep}_{lm.name}{suffix}.md").write_text(md)
        (out / f"sweep_{args.sweep}_{lm.name}{suffix}.json").write_text(json.dumps(rows, indent=1))
        print(md)
        return 0
    from ..models.registry import BUILTIN

    if args.part not in (None, "report"):
        raise InputError("the bench reports on the report part; sweeps (--sweep) use the tune part")
    facts_n = 0 if args.full else (30 if args.facts is None else args.facts)
    report = run_bench(args.out, args.models or list(BUILTIN), facts_n, args.stats_samples, corpus,
                       args.methods, args.full or args.extras, Bar(), merge=args.merge)
    print((Path(args.out) / "bench.md").read_text())
    return 0 if report["models"] else 1
