"""zsRE question-answering edits in MEND's eval schema (also the base of several Yao et al. 2023 files)."""

from __future__ import annotations

from pathlib import Path

from ..cases import Case, Probe
from ._io import Skip, map_records, need_text, read_records, subject_template, unique_texts
from .counterfact import with_yao

ZSRE_SIGNATURE = ("subject", "src", "alt", "answers")


def zsre_case(r: dict, index: int) -> Case:
    """One MEND-schema record, with the Yao et al. fields it carries; the inverse-relation file of Yao
    et al. has no ``loc``/``loc_ans`` and maps the same way."""
    subject = need_text(r["subject"], "subject")
    question = need_text(r["src"], "src")
    answers = r["answers"]
    if not isinstance(answers, list) or not answers:
        raise Skip("answers is empty")
    neighbours = ()
    if r.get("loc") and r.get("loc_ans"):
        neighbours = (Probe(str(r["loc"]), str(r["loc_ans"])),)
    case = Case(
        id=f"zsre:{index}",
        relation_id="",
        relation="",
        prompt=subject_template(question, subject),
        subject=subject,
        target_true=str(answers[0]),
        targets_new=(need_text(r["alt"], "alt"),),
        paraphrases=unique_texts([r.get("rephrase")]),
        neighbourhood=neighbours,
        provenance=f"zsre:index={index}",
    )
    return with_yao(case, r)


def load_zsre(path: Path, limit: int | None = None) -> list[Case]:
    """zsRE in MEND's eval schema (also Yao et al.'s zsRE portability files)."""
    return map_records(read_records(path, "zsRE"), zsre_case, path=path, signature=ZSRE_SIGNATURE,
                       fmt="zsRE (MEND eval schema: subject, src, alt, answers, rephrase, loc, loc_ans)",
                       limit=limit)
