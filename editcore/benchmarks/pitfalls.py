"""The pitfall sets of Li et al. 2024 (ICLR): ConflictEdit (pairs of edits that contradict each other)
and RoundEdit (an edit and its reversal). Relation templates live in a prompts file beside the data
(``conflict_prompts.json``, ``round_prompts.json``); without one the cases carry no extra templates."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ..cases import Case, ConflictCase, Probe, RoundTripCase
from ._io import Skip, map_records, need_text, read_records, unique_texts

log = logging.getLogger(__package__)


def _label(x: Any, what: str) -> str:
    if isinstance(x, dict):
        x = x.get("label")
    return need_text(x, what)


def _prompt_file(path: Path, name: str) -> dict[str, list[str]]:
    """Relation id -> templates from the prompts file ``name`` beside ``path`` ({} when there is none)."""
    candidate = path.with_name(name)
    if not candidate.is_file():
        return {}
    try:
        data = json.loads(candidate.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        log.warning("%s is not valid JSON; relation prompts ignored", candidate)
        return {}
    return {str(k): [str(t) for t in v] for k, v in data.items() if isinstance(v, list)} if isinstance(data, dict) else {}


def _pitfall_edit(e: dict, cid: str, old_key: str = "object") -> Case:
    rel = e["relation"]
    return Case(
        id=cid,
        relation_id=str(rel.get("id") or ""),
        relation=str(rel.get("label") or ""),
        prompt=need_text(rel["prompt"], "relation prompt"),
        subject=_label(e["subject"], "subject"),
        target_true=_label(e[old_key], old_key),
        targets_new=(_label(e["new_object"], "new_object"),),
        paraphrases=unique_texts([str(rel.get("query", "")).format(_label(e["subject"], "subject"))]),
        provenance="conflictedit",
    )


def load_conflictedit(path: Path, limit: int | None = None) -> list[ConflictCase]:
    """ConflictEdit ``reverse_edit``/``composite_edit``/``coverage_edit`` files; relation templates come
    from ``conflict_prompts.json`` beside the file when present."""
    prompts = _prompt_file(path, "conflict_prompts.json")

    def mapper(r: dict, index: int) -> ConflictCase:
        kind = r["type"]
        edits = r["edits"]
        if not isinstance(edits, list) or len(edits) != 2:
            raise Skip("a conflict needs exactly two edits")
        cid = f"conflictedit:{kind}:{index}"
        pair = tuple(_pitfall_edit(e, f"{cid}:edit-{k + 1}") for k, e in enumerate(edits))
        tied = tuple(Probe(need_text(t["relation"]["prompt"], "prompt").format(_label(t["subject"], "subject")),
                           _label(t["object"], "object")) for t in r.get("triples") or ())
        if "true_object" in edits[1]:
            implied = _label(edits[1]["true_object"], "true_object")
        else:
            implied = _label(edits[1]["object"], "object")
        rel_ids = {c.relation_id for c in pair} | {str(t["relation"].get("id")) for t in r.get("triples") or ()}
        return ConflictCase(
            id=cid, type=kind, edits=pair, rule=str(r.get("rule") or ""), tied=tied,
            prerequisites=tuple(int(i) for i in r.get("prerequisites") or ()), implied_object=implied,
            prompts=tuple((rid, tuple(prompts[rid])) for rid in sorted(rel_ids) if rid in prompts),
            provenance=f"conflictedit:{path.name}:index={index}",
        )

    return map_records(read_records(path, "ConflictEdit"), mapper, path=path, limit=limit,
                       signature=("type", "edits", "triples"),
                       fmt="ConflictEdit (type, triples[], prerequisites[], edits[2])")


def load_roundedit(path: Path, limit: int | None = None) -> list[RoundTripCase]:
    """RoundEdit ``easy``/``hard`` files; templates come from ``round_prompts.json`` beside the file."""
    prompts = _prompt_file(path, "round_prompts.json")

    def mapper(r: dict, index: int) -> RoundTripCase:
        e = r["edit"]
        rel = e["relation"]
        rid = str(rel.get("id") or "")
        objects = tuple(_label(o, "true object") for o in r["true_objects"])
        if not objects:
            raise Skip("true_objects is empty")
        return RoundTripCase(
            id=f"roundedit:{path.stem}:{index}", relation_id=rid, relation=str(rel.get("label") or ""),
            prompt=need_text(rel["prompt"], "relation prompt"), subject=_label(e["subject"], "subject"),
            object=_label(e["object"], "object"), new_object=_label(e["new_object"], "new_object"),
            true_objects=objects, prompts=tuple(prompts.get(rid, ())), type=str(r.get("type") or ""),
            provenance=f"roundedit:{path.name}:index={index}",
        )

    return map_records(read_records(path, "RoundEdit"), mapper, path=path, limit=limit,
                       signature=("type", "edit", "true_objects"),
                       fmt="RoundEdit (type, edit{relation, subject, object, new_object}, true_objects[])")
