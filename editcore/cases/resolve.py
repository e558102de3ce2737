"""A :class:`Case` from a plain spec (what the dashboard and the command line send), and the rule for a
new target that the case does not list itself.

:mod:`editcore.text` (and with it torch) is imported only where a model is asked, so that resolving a
catalog or benchmark fact stays cheap.
"""

from __future__ import annotations

from dataclasses import replace

from ..benchmarks import load_benchmark
from ..catalog import load_catalog
from ..errors import InputError
from .schema import Case, answers_equal, free_form_case


def benchmark_cases(name: str, limit: int = 50, path: str | None = None) -> list[Case]:
    """The single-fact cases of a public benchmark (multi-hop, conflict and round-trip records are left out)."""
    return [c for c in load_benchmark(name, path=path or None, limit=int(limit)) if isinstance(c, Case)]


def resolve_case(spec: dict, lm=None) -> Case:
    """A :class:`Case` from a plain spec: ``{"source": "catalog", "id"}``, ``{"source": "benchmark",
    "name", "id"[, "path"]}``, ``{"source": "free", "prompt", "subject", "target_new"[, "target_true"]}``
    or ``{"source": "case", "case": <Case.to_dict()>}``. A catalog or benchmark spec may name its
    ``"target_new"``: one of the case's targets or any other (see :func:`with_new_target`)."""
    source = (spec or {}).get("source")
    if source == "catalog":
        for c in load_catalog():
            if c.id == spec.get("id"):
                return with_new_target(c, spec.get("target_new"))
        raise InputError(f"no catalog fact with id {spec.get('id')!r}")
    if source == "benchmark":
        for c in benchmark_cases(spec.get("name", ""), int(spec.get("limit", 200)), spec.get("path")):
            if c.id == spec.get("id"):
                return with_new_target(c, spec.get("target_new"))
        raise InputError(f"no case {spec.get('id')!r} in benchmark {spec.get('name')!r}")
    if source == "free":
        from ..text import context_length

        tok = lm.tokenizer if lm is not None else None
        case = free_form_case(spec.get("prompt", ""), spec.get("subject", ""), spec.get("target_new", ""),
                              spec.get("target_true") or None,
                              max_tokens=context_length(lm) if lm is not None else None, tokenizer=tok)
        if not case.target_true and lm is not None:
            # The model's own greedy answer stands in for the unknown old answer.
            case = case.with_target_true(_greedy_answer(lm, case.edit_prompt))
        return case
    if source == "case":
        return Case.from_dict(spec["case"])
    raise InputError(f"unknown fact source {source!r}")


def _greedy_answer(lm, prompt: str) -> str:
    """The unedited model's first word after ``prompt`` (greedy, a few tokens), trailing punctuation cut."""
    from ..decoding import greedy

    with lm.scope():
        text = greedy(lm, [prompt], max_new_tokens=4)[0]
    words = text.strip().split()
    return words[0].strip(".,;:") if words else text.strip()


def with_new_target(case: Case, target: str | None) -> Case:
    """A catalog or benchmark case edited towards ``target`` (``None``: the case as it is). One of the
    case's own targets (matched case-insensitively) is moved first; any other target is put first as a
    free target, for which the case has no one-hop questions; its related words are borrowed from the catalog
    fact that lists them, else the metrics use the model's own suggestions."""
    if target is None:
        return case
    target = " ".join(str(target).split())
    if not target:
        raise InputError("the new target is empty")
    if answers_equal(target, case.target_true):
        raise InputError(f"the new target {target!r} equals the current answer")
    own = [t for t in case.targets_new if answers_equal(t, target)]
    chosen = own[0] if own else target
    first = case.targets_new[0] if case.targets_new else None
    case = replace(case, targets_new=(chosen, *(t for t in case.targets_new if t != chosen)),
                   # a dataset's distracting prompts name its first new target
                   distracting_neighbourhood=case.distracting_neighbourhood if chosen == first else ())
    if not case.related_words(chosen):
        # Another catalog fact may know this word's associations (Big Ben for London): borrow them, so a
        # typed target still gets the related-words view with words a person would pick.
        words = catalog_related_words(chosen)
        if words:
            case = replace(case, related=(*case.related, (chosen, words)))
    return case


def catalog_related_words(target: str) -> tuple[str, ...]:
    """Related words the fact catalog lists for ``target`` in any fact (first one found; () if none)."""
    for c in load_catalog():
        words = c.related_words(target)
        if words:
            return words
    return ()


def is_case_target(entry: dict, target: str) -> bool:
    """Whether ``target`` is one of a fact entry's own new targets (else it is a free target)."""
    return any(answers_equal(t, target) for t in entry.get("targets_new", ()))
