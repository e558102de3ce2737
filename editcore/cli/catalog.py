"""``catalog`` sub-command: inspect the shipped facts and check which ones a model knows."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("catalog", help="the shipped fact catalog")
    csub = p.add_subparsers(dest="catalog_command", metavar="ACTION")

    c = csub.add_parser("check", help="ask MODEL every catalog prompt; write data/catalog_check/<model>.json")
    c.add_argument("model")
    c.add_argument("--max-new-tokens", type=int, default=8)
    c.add_argument("--limit", type=int, default=None, help="check only the first N facts")
    c.add_argument("--relation", default=None, help="check only one relation (e.g. P276)")
    c.add_argument("--out-dir", default=None, help="where to write the report (default: data/catalog_check)")
    c.set_defaults(func=_check)

    s = csub.add_parser("stats", help="counts of facts per relation and of the other case kinds")
    s.set_defaults(func=_stats)
    p.set_defaults(func=_stats)


def _check(args) -> int:
    from pathlib import Path

    from .. import catalog
    from ..errors import InputError
    from ..models import load_model
    from .progress import Bar

    if not 1 <= args.max_new_tokens <= 64:
        raise InputError("--max-new-tokens must be between 1 and 64")
    cases = catalog.filter_cases(catalog.load_catalog(), relation=args.relation)
    if args.limit is not None:
        if args.limit < 1:
            raise InputError("--limit must be at least 1")
        cases = cases[: args.limit]
    if not cases:
        raise InputError(f"no catalog fact has the relation {args.relation!r}")
    lm = load_model(args.model, progress=Bar())
    bar = Bar()
    with lm.scope():
        report = catalog.check_model(lm, cases, max_new_tokens=args.max_new_tokens,
                                     progress=lambda done, total: bar("answering prompts", done / total))
    path = catalog.write_check(report, args.model, Path(args.out_dir) if args.out_dir else None)
    for line in catalog.summary_lines(report):
        print(line)
    print(f"written to {path}")
    return 0


def _stats(args) -> int:
    from .. import catalog

    facts = catalog.load_catalog()
    print(f"{len(facts)} facts over {len(catalog.relations(facts))} relations")
    for rid, name, n in catalog.relations(facts):
        print(f"  {rid:<7} {name:<22} {n}")
    conflicts = catalog.load_conflicts()
    kinds = {t: sum(c.type == t for c in conflicts) for t in sorted({c.type for c in conflicts})}
    print(f"{len(catalog.load_multihop())} multi-hop chains; conflicts {kinds}; "
          f"{len(catalog.load_roundtrips())} round trips")
    return 0
