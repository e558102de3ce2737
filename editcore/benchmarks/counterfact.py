"""CounterFact (Meng et al. 2022) in the ROME schema or EasyEdit's split, CounterFact+, and the fields
Yao et al. 2023 add to CounterFact and zsRE records (portability and locality probes)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from ..cases import Case, Probe
from ._io import Skip, map_records, need_text, pick_format, read_records, subject_template, unique_texts

CF_SIGNATURE = ("case_id", "requested_rewrite")
CF_FORMAT = "CounterFact (ROME schema: case_id, requested_rewrite{prompt, subject, target_new, target_true})"
EASY_SIGNATURE = ("prompt", "target_new", "subject", "ground_truth")


def counterfact_case(r: dict, index: int, source: str = "counterfact") -> Case:
    """One record of the ROME schema (also CounterFact+ and Yao et al.'s CounterFact-based files)."""
    rw = r["requested_rewrite"]
    subject = need_text(rw["subject"], "subject")
    prompt = need_text(rw["prompt"], "prompt")
    if "{}" not in prompt:
        raise Skip("the prompt has no '{}' for the subject")
    old = need_text(rw["target_true"], "target_true")
    new = need_text(rw["target_new"], "target_new")
    paraphrases = unique_texts(r.get("paraphrase_prompts") or ())
    neighbours = tuple(Probe(p, old) for p in r.get("neighborhood_prompts") or () if isinstance(p, str))
    case_id = r["case_id"]
    return Case(
        id=f"{source}:{case_id}",
        relation_id=str(rw.get("relation_id") or ""),
        relation=str(rw.get("relation_id") or ""),
        prompt=prompt,
        subject=subject,
        target_true=old,
        targets_new=(new,),
        paraphrases=paraphrases,
        neighbourhood=neighbours,
        distracting_neighbourhood=unique_texts(r.get("distracting_neighborhood_prompts") or ()),
        generation_prompts=unique_texts(r.get("generation_prompts") or ()),
        provenance=f"{source}:case_id={case_id}",
    )


def _easyedit_case(r: dict, index: int, source: str = "counterfact") -> Case:
    subject = need_text(r["subject"], "subject")
    prompt = subject_template(need_text(r["prompt"], "prompt"), subject)
    old = need_text(r["ground_truth"], "ground_truth")
    new = need_text(r["target_new"], "target_new")
    neighbours = ()
    if r.get("locality_prompt") and r.get("locality_ground_truth"):
        neighbours = (Probe(r["locality_prompt"], need_text(r["locality_ground_truth"], "locality_ground_truth")),)
    case_id = r.get("case_id", index)
    return Case(
        id=f"{source}:{case_id}",
        relation_id="",
        relation="",
        prompt=prompt,
        subject=subject,
        target_true=old,
        targets_new=(new,),
        paraphrases=unique_texts([r.get("rephrase_prompt")]),
        neighbourhood=neighbours,
        provenance=f"{source}-easyedit:case_id={case_id}",
    )


def with_yao(case: Case, r: dict) -> Case:
    """Add Yao et al. 2023 portability/locality fields of a CounterFact or zsRE record to its case, each to
    its own family: ``portability`` (New Question/Answer) -> One-Hop; ``alternative_subject`` (with
    ``alter_subject_question`` when the file states it) -> Subject-Replace; ``inverse question`` ->
    Reverse-Relation; ``unrelated_relation`` -> Other-Attribution (locality)."""
    changes: dict[str, Any] = {}
    port = r.get("portability")
    if isinstance(port, dict) and port.get("New Question") and port.get("New Answer"):
        changes["one_hop"] = case.one_hop + (Probe(port["New Question"], str(port["New Answer"]),
                                                   target=case.target_new),)
    alt = r.get("alternative_subject")
    if isinstance(alt, str) and alt.strip():
        question = r.get("alter_subject_question")
        if isinstance(question, str) and question.strip():
            # zsRE's Subject-Replace file states the probe in full: the question about the alias, answered
            # with the new target (EasyEdit's ``subject replacement`` portability input).
            changes["subject_replace"] = case.subject_replace + (
                Probe(question, case.target_new, target=case.target_new),)
        else:  # CounterFact's: the edit template with the alias as subject (built by the metric)
            changes["aliases"] = case.aliases + (alt,)
    other = r.get("unrelated_relation")
    if isinstance(other, dict) and other.get("question") and other.get("object"):
        changes["attributes"] = case.attributes + (Probe(other["question"], str(other["object"])),)
    inverse = r.get("inverse question")
    if isinstance(inverse, str) and inverse.strip():
        changes["reverse"] = Probe(inverse, case.subject, target=case.target_new)
    return replace(case, **changes) if changes else case


def counterfact_with_yao(records, path: Path, limit: int | None) -> list[Case]:
    """ROME-schema records with any Yao et al. fields they carry (CounterFact and Yao's CF-based files)."""
    return map_records(records, lambda r, i: with_yao(counterfact_case(r, i), r), path=path,
                       fmt=CF_FORMAT, signature=CF_SIGNATURE, limit=limit)


def load_counterfact(path: Path, limit: int | None = None) -> list[Case]:
    """CounterFact in the ROME schema, or EasyEdit's one-paraphrase edit split (told apart on the whole file)."""
    records = list(read_records(path, CF_FORMAT))
    if pick_format(records, {"rome": CF_SIGNATURE, "easyedit": EASY_SIGNATURE}, "rome") == "easyedit":
        return map_records(records, _easyedit_case, path=path, limit=limit, signature=EASY_SIGNATURE,
                           fmt="EasyEdit CounterFact (prompt, subject, target_new, ground_truth)")
    return counterfact_with_yao(records, path, limit)


def load_counterfact_plus(path: Path, limit: int | None = None) -> list[Case]:
    """CounterFact+: CounterFact records with ``distracting_neighborhood_prompts`` (required here)."""
    sig = ("case_id", "requested_rewrite", "distracting_neighborhood_prompts")
    return map_records(read_records(path, "CounterFact+"),
                       lambda r, i: counterfact_case(r, i, "counterfact_plus"), path=path,
                       fmt="CounterFact+ (CounterFact records with distracting_neighborhood_prompts)",
                       signature=sig, limit=limit)
