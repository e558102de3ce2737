"""``cases`` sub-command: list facts to edit from the catalog or a public benchmark."""

from __future__ import annotations

SOURCES = ("catalog", "multihop", "conflicts", "roundtrip")


def register(sub) -> None:
    p = sub.add_parser("cases", help="facts to edit: the shipped catalog or a benchmark file")
    csub = p.add_subparsers(dest="cases_command", metavar="ACTION")
    ls = csub.add_parser("list", help="one line per case: id, relation, filled prompt, old -> new")
    ls.add_argument("--source", default="catalog",
                    help="catalog, multihop, conflicts, roundtrip, or a benchmark name (e.g. counterfact, mquake)")
    ls.add_argument("--path", default=None, help="the benchmark file (default: its file in the shared data folder)")
    ls.add_argument("--relation", default=None, help="only this relation (id such as P276, or its name)")
    ls.add_argument("--search", default=None, help="only cases whose prompt or targets contain this text")
    ls.add_argument("--limit", type=int, default=None, help="at most N cases")
    ls.set_defaults(func=_list)
    p.set_defaults(func=_list, source="catalog", path=None, relation=None, search=None, limit=None)


def case_lines(items) -> list[str]:
    """The printed form of any case kind (also used by tests)."""
    from ..cases import Case, ConflictCase, MultiHopCase, RoundTripCase
    from ..benchmarks import ChoiceItem, QAItem, SummaryItem

    lines = []
    for c in items:
        if isinstance(c, Case):
            lines.append(f"{c.id}\t{c.relation_id or '-'}\t{c.edit_prompt}\t{c.target_true or '?'} -> {c.target_new}")
        elif isinstance(c, MultiHopCase):
            edits = "; ".join(f"{e.edit_prompt} {e.target_true} -> {e.target_new}" for e in c.edits)
            lines.append(f"{c.id}\t{len(c.edits)} edit(s)\t{c.questions[0]}\t{c.answer} -> {c.new_answer}\t[{edits}]")
        elif isinstance(c, ConflictCase):
            edits = "; ".join(f"{e.edit_prompt} {e.target_true} -> {e.target_new}" for e in c.edits)
            lines.append(f"{c.id}\t{c.type}\t{c.rule or '-'}\t{edits}")
        elif isinstance(c, RoundTripCase):
            lines.append(f"{c.id}\t{c.relation_id}\t{c.prompt.format(c.subject)}\t"
                         f"{c.object} -> {c.new_object} -> {c.object}\t{{{', '.join(c.true_objects)}}}")
        elif isinstance(c, ChoiceItem):
            lines.append(f"{c.id}\t{c.context[:80]}\t{c.choices[c.label][:60]}")
        elif isinstance(c, QAItem):
            lines.append(f"{c.id}\t{c.question[:80]}\t{' | '.join(c.answers)[:60]}")
        elif isinstance(c, SummaryItem):
            lines.append(f"{c.id}\t{c.summary[:100]}")
    return [line.replace("\n", " ") for line in lines]


def load_cases(source: str, path: str | None = None, relation: str | None = None,
               search: str | None = None, limit: int | None = None) -> list:
    from .. import catalog
    from ..benchmarks import BENCHMARKS, load_benchmark
    from ..cases import Case
    from ..errors import InputError

    if limit is not None and limit < 1:
        raise InputError("--limit must be at least 1")
    if source == "catalog":
        items = catalog.load_catalog()
    elif source == "multihop":
        items = catalog.load_multihop()
    elif source == "conflicts":
        items = catalog.load_conflicts()
    elif source == "roundtrip":
        items = catalog.load_roundtrips()
    elif source in BENCHMARKS:
        filtering = relation or search
        items = load_benchmark(source, path, limit=None if filtering else limit)
    else:
        raise InputError(f"unknown source {source!r}; choose one of {', '.join(SOURCES + tuple(sorted(BENCHMARKS)))}")
    if relation or search:
        if not all(isinstance(c, Case) for c in items):
            raise InputError(f"--relation and --search apply to single facts, not to {source}")
        items = catalog.filter_cases(items, relation=relation, text=search)
    return items[:limit] if limit is not None else items


def _list(args) -> int:
    import sys

    items = load_cases(args.source, args.path, args.relation, args.search, args.limit)
    try:
        for line in case_lines(items):
            print(line)
        sys.stdout.flush()
    except BrokenPipeError:  # `| head` closed the pipe
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
