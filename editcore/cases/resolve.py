"""A :class:`Case` from a plain spec (what the dashboard and the command line send), and the rule for a
new target that the case does not list itself.

:mod:`editcore.text` (and with it torch) is imported only where a model is asked, so that resolving a
catalog or benchmark fact stays cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from .. import neighbours as nb
from ..benchmarks import load_benchmark
from ..catalog import load_catalog
from ..errors import InputError
from ..neighbours import Neighbour
from .schema import Case, Probe, answers_equal, free_form_case, prompt_template


def benchmark_cases(name: str, limit: int = 50, path: str | None = None) -> list[Case]:
    """The single-fact cases of a public benchmark (multi-hop, conflict and round-trip records are left out)."""
    return [c for c in load_benchmark(name, path=path or None, limit=int(limit)) if isinstance(c, Case)]


def resolve_case(spec: dict, lm=None) -> Case:
    """A :class:`Case` from a plain spec: ``{"source": "catalog", "id"}``, ``{"source": "benchmark",
    "name", "id"[, "path"]}``, ``{"source": "free", "prompt", "subject", "target_new"[, "target_true",
    "relation", "neighbours"]}`` (see :func:`free_form`) or ``{"source": "case", "case": <Case.to_dict()>}``.
    A catalog or benchmark spec may name its ``"target_new"``: one of the case's targets or any other (see
    :func:`with_new_target`)."""
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
        return free_form(spec, lm)[0]
    if source == "case":
        return Case.from_dict(spec["case"])
    raise InputError(f"unknown fact source {source!r}")


ANSWER_TOKENS = 6  # greedy tokens read for a model's own answer (enough for "New York City")


def model_answer(lm, prompt: str, candidates: Sequence[str] = ()) -> tuple[str, str]:
    """The unedited model's own answer after ``prompt``: ``(answer, continuation)``. The answer is the
    longest of ``candidates`` the greedy continuation starts with (catalog answer matching, so a multi-word
    answer such as "New York City" is kept whole), else its first word with trailing punctuation cut.
    Read through the pre-edit cache, so asking again (every rerun of the page) costs nothing."""
    from ..catalog import answer_matches
    from ..metrics.scoring import Scorer

    with lm.scope():
        text = Scorer(lm, pre=True).greedy([prompt], ANSWER_TOKENS)[0]
    hits = [c for c in candidates if c and answer_matches(text, c)]
    if hits:
        return max(hits, key=len), text
    words = text.strip().split()
    return (words[0].strip(".,;:!?\"'()") if words else text.strip()), text


@dataclass(frozen=True)
class FreeForm:
    """What resolving a typed-in fact decided besides the case: its relation, where its old answer and its
    neighbours came from (the dashboard shows all of it before and after the run)."""

    template: str
    relation: str  # catalog relation id, "" when none
    relation_source: str  # "recognised", "chosen" or "none"
    relations: tuple[dict, ...]  # recognise_relation's ranking
    typed_answer: str  # the old answer as typed ("" when left to the model)
    model_answer: str  # the unedited model's own answer ("" without a model)
    continuation: str  # its greedy continuation, from which the answer was read
    neighbours: tuple[Neighbour, ...]

    @property
    def old_answer(self) -> str:
        return self.typed_answer or self.model_answer

    def to_dict(self) -> dict:
        return {"template": self.template, "relation": self.relation, "relation_source": self.relation_source,
                "relations": list(self.relations), "typed_answer": self.typed_answer,
                "model_answer": self.model_answer, "continuation": self.continuation,
                "old_answer_source": "typed" if self.typed_answer else "model",
                "neighbours": [n.to_dict() for n in self.neighbours]}


def describe_free_form(prompt: str, subject: str, typed_answer: str | None = None, relation: str | None = "auto",
                       lm=None, neighbours=None) -> FreeForm:
    """Everything about a typed-in fact except its new target (the dashboard shows it before the run):
    the template, the relation (``"auto"``: recognised from the template; a catalog relation id; ``"none"``),
    the unedited model's own answer and the neighbourhood (``neighbours``, the list as the user edited it,
    taken as it is; None: built from the catalog, see :mod:`editcore.neighbours`). A neighbour without an
    answer expects the model's own answer to it."""
    template = prompt_template(prompt, subject)
    subject = subject.strip()
    typed = " ".join(str(typed_answer or "").split())
    chosen = str(relation or "auto").strip()
    if chosen not in ("auto", "none") and chosen not in nb.relation_templates():
        raise InputError(f"unknown relation {chosen!r}; choose one of the catalog's, 'auto' or 'none'")
    ranked = tuple(nb.recognise_relation(template, typed or None)) if chosen == "auto" else ()
    candidates = nb.catalog_answers(chosen) if chosen not in ("auto", "none") else \
        [a for r in ranked for a in nb.catalog_answers(r["relation"])]
    own, cont = model_answer(lm, template.format(subject), candidates + [typed]) if lm is not None else ("", "")
    old = typed or own
    if chosen == "auto":
        ranked = tuple(nb.recognise_relation(template, old or None))  # the answer settles near-ties
        rel, how = (ranked[0]["relation"], "recognised") if ranked else ("", "none")
    else:
        rel, how = ("", "none") if chosen == "none" else (chosen, "chosen")
    if neighbours is not None:
        built = nb.user_neighbours(neighbours)
    else:
        built = nb.build_neighbourhood(template, subject, old, rel) if old else []
    if lm is not None and any(not n.answer for n in built):
        built = [n if n.answer else replace(n, answer=model_answer(lm, n.prompt)[0]) for n in built]
    return FreeForm(template, rel, how, ranked, typed, own, cont, tuple(built))


def free_form(spec: dict, lm=None) -> tuple[Case, FreeForm]:
    """A typed-in fact as a case with a neighbourhood: ``spec`` holds ``prompt``, ``subject``,
    ``target_new`` and optionally ``target_true`` (empty: the model's own answer), ``relation`` and
    ``neighbours`` (see :func:`describe_free_form`)."""
    from ..text import context_length

    tok = lm.tokenizer if lm is not None else None
    limit = context_length(lm) if lm is not None else None

    def case_with(old):
        return free_form_case(spec.get("prompt", ""), spec.get("subject", ""), spec.get("target_new", ""), old or None,
                              max_tokens=limit, tokenizer=tok)

    case_with(spec.get("target_true"))  # the typed fields' own errors come first (before asking the model)
    info = describe_free_form(spec.get("prompt", ""), spec.get("subject", ""), spec.get("target_true"),
                              spec.get("relation"), lm, spec.get("neighbours"))
    if lm is not None and not info.old_answer:
        raise InputError("the unedited model writes no word after this prompt: type the current answer")
    case = case_with(info.old_answer)
    rel = nb.relation_templates().get(info.relation, {})
    # Related words of both targets from the catalog facts that list them (Big Ben for London, the Eiffel
    # Tower for Paris): the "Big Ben" view then has words a person would pick, not only the model's guesses.
    related = tuple((t, w) for t in (case.target_new, case.target_true) if t and (w := catalog_related_words(t)))
    case = replace(case, relation_id=info.relation, relation=rel.get("name", ""), related=related,
                   neighbourhood=tuple(Probe(n.prompt, n.answer) for n in info.neighbours if n.answer))
    return case, info


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
