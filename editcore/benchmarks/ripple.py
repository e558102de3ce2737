"""RippleEdits (Cohen et al. 2024): one edit and the facts that should, or should not, move with it.

Mapping: Subject_Aliasing test prompts become paraphrases; Relation_Specificity and Forgetfulness become
attributes (answers that must survive); Logical_Generalization and both Compositionality axes become
one-hop probes whose answers hold after the edit. Records that name no subject get one guessed from the
prompts about the same subject (:func:`_guess_subject`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..cases import Case, Probe
from ._io import Skip, map_records, need_text, read_records, subject_template, unique_texts

RIPPLE_SIGNATURE = ("edit", "Relation_Specificity")


def _ripple_queries(tests: Any) -> list[tuple[str, str, str]]:
    """(prompt, first answer value, subject id) of every test query of one axis."""
    out = []
    for test in tests or ():
        for q in test.get("test_queries") or ():
            answers = q.get("answers") or []
            if q.get("prompt") and answers and str(answers[0].get("value", "")).strip():
                out.append((q["prompt"], str(answers[0]["value"]), str(q.get("subject_id") or "")))
    return out


_STOP = {"the", "a", "an", "of", "is", "was", "in", "on", "at", "to", "by", "for", "and", "name", "which", "who"}


def _shared_runs(a: str, b: str) -> list[str]:
    """Maximal runs of whole words shared by two sentences, trimmed of function words at both ends."""
    wa, wb = a.split(), b.split()
    runs = []
    for i in range(len(wa)):
        for j in range(len(wb)):
            if wa[i] != wb[j] or (i and j and wa[i - 1] == wb[j - 1]):
                continue
            n = 0
            while i + n < len(wa) and j + n < len(wb) and wa[i + n] == wb[j + n]:
                n += 1
            words = wa[i:i + n]
            while words and words[0].lower() in _STOP:
                words = words[1:]
            while words and words[-1].lower() in _STOP:
                words = words[:-1]
            if words:
                runs.append(" ".join(words))
    return runs


def _guess_subject(cloze: str, others: list[str]) -> str:
    """The subject of an unlabeled RippleEdits edit: the longest content run it shares with other
    prompts about the same subject (ties go to the run shared with most prompts)."""
    votes: dict[str, int] = {}
    for other in others:
        for run in set(_shared_runs(cloze, other)):
            votes[run] = votes.get(run, 0) + 1
    if not votes:
        return ""
    return max(votes, key=lambda r: (votes[r], len(r)))


def _ripple_case(r: dict, index: int) -> Case:
    ed = r["edit"]
    statement = need_text(ed["prompt"], "edit prompt").strip()
    original = ed.get("original_fact") or ed.get("previous_fact") or {}
    new = ed.get("target_label") or ed.get("target")
    old = original.get("target_label") or original.get("target") or ""
    body = statement.rstrip(".")
    if not new:
        # The released files phrase the edit as "<prompt> <new target>." and the original fact the same way.
        orig_body = str(original.get("prompt") or "").rstrip(".")
        if not orig_body:
            raise Skip("the edit has no target label and no original fact to recover it from")
        k = 0
        while k < min(len(body), len(orig_body)) and body[k] == orig_body[k]:
            k += 1
        k = body.rfind(" ", 0, k + 1)
        new, old = body[k + 1:], orig_body[k + 1:]
    if not body.endswith(new):
        raise Skip("the edit prompt does not end with its target")
    cloze = body[: len(body) - len(new)].rstrip()
    specificity = _ripple_queries(r.get("Relation_Specificity"))
    subject = ed.get("subject_label") or ed.get("subject")
    if not subject:
        same = [p for p, _, sid in specificity + _ripple_queries(r.get("Forgetfulness"))
                if sid == str(ed.get("subject_id"))]
        subject = _guess_subject(cloze, same)
    if not subject or subject not in cloze:
        raise Skip("the subject cannot be found in the edit prompt")
    one_hop = [Probe(p, a, target=new) for axis in ("Logical_Generalization", "Compositionality_I",
                                                    "Compositionality_II") for p, a, _ in _ripple_queries(r.get(axis))]
    return Case(
        id=f"ripple_edits:{r.get('example_type', 'example')}:{index}",
        relation_id=str(ed.get("relation") or ""),
        relation=str(ed.get("relation") or "").replace("_", " ").lower(),
        prompt=subject_template(cloze, subject),
        subject=subject,
        target_true=str(old or ""),
        targets_new=(new,),
        paraphrases=unique_texts(p for p, _, _ in _ripple_queries(r.get("Subject_Aliasing"))),
        attributes=tuple(Probe(p, a) for p, a, _ in specificity + _ripple_queries(r.get("Forgetfulness"))),
        one_hop=tuple(one_hop),
        provenance=f"ripple_edits:{r.get('example_type', '')}:index={index}",
    )


def load_ripple_edits(path: Path, limit: int | None = None) -> list[Case]:
    """RippleEdits ``popular``/``random``/``recent`` files (the mapping is in the module docstring)."""
    return map_records(read_records(path, "RippleEdits"), _ripple_case, path=path,
                       signature=RIPPLE_SIGNATURE, limit=limit,
                       fmt="RippleEdits (edit, Relation_Specificity, Logical_Generalization, ...)")
