"""MQuAKE (Zhong et al. 2023): several edits per instance and the multi-hop questions they change."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..cases import Case, MultiHopCase, Probe
from ._io import Skip, map_records, need_text, read_records, unique_texts

MQUAKE_SIGNATURE = ("case_id", "requested_rewrite", "questions", "new_answer")


def _hops(items: Any) -> tuple[Probe, ...]:
    """Each hop as its cloze statement, with the answer's aliases and the hop's question (MQuAKE asks
    unedited hops as few-shot questions, edited ones as the cloze the edit was written with)."""
    return tuple(Probe(need_text(h["cloze"], "cloze"), need_text(h["answer"], "answer"),
                       aliases=unique_texts(h.get("answer_alias") or ()),
                       question=h.get("question") if isinstance(h.get("question"), str) else None)
                 for h in items or ())


def _mquake_case(r: dict, index: int) -> MultiHopCase:
    cid = r["case_id"]
    rewrites = r["requested_rewrite"]
    if not isinstance(rewrites, list) or not rewrites:
        raise Skip("requested_rewrite is empty")
    edits = []
    for k, rw in enumerate(rewrites):
        edits.append(Case(
            id=f"mquake:{cid}:{k}",
            relation_id=str(rw.get("relation_id") or ""),
            relation=str(rw.get("relation_id") or ""),
            prompt=need_text(rw["prompt"], "prompt"),
            subject=need_text(rw["subject"], "subject"),
            target_true=need_text(rw["target_true"], "target_true"),
            targets_new=(need_text(rw["target_new"], "target_new"),),
            paraphrases=unique_texts([rw.get("question")]),
            provenance=f"mquake:case_id={cid}",
        ))
    return MultiHopCase(
        id=f"mquake:{cid}",
        edits=tuple(edits),
        questions=unique_texts(r["questions"]),
        answer=need_text(r["answer"], "answer"),
        answer_aliases=unique_texts(r.get("answer_alias") or ()),
        new_answer=need_text(r["new_answer"], "new_answer"),
        new_answer_aliases=unique_texts(r.get("new_answer_alias") or ()),
        single_hops=_hops(r.get("single_hops")),
        new_single_hops=_hops(r.get("new_single_hops")),
        provenance=f"mquake:case_id={cid}",
    )


def load_mquake(path: Path, limit: int | None = None) -> list[MultiHopCase]:
    """MQuAKE-CF-3k, MQuAKE-T and MQuAKE-hard (one schema)."""
    return map_records(read_records(path, "MQuAKE"), _mquake_case, path=path, signature=MQUAKE_SIGNATURE,
                       fmt="MQuAKE (case_id, requested_rewrite[], questions, answer, new_answer)", limit=limit)
