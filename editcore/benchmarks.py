"""Loaders for public knowledge-editing benchmarks and downstream task sets.

Every editing benchmark becomes :class:`~editcore.cases.Case` records (or the multi-hop, conflict and
round-trip kinds), so methods and metrics never see a source's own schema. Downstream sets become small
typed records (:class:`ChoiceItem`, :class:`QAItem`, :class:`SummaryItem`).

Local files are read with the standard ``json``/``csv`` modules: the sources are single JSON arrays or
JSON lines with nested, ragged fields that ``datasets`` would coerce into a columnar schema without
adding anything. ``datasets`` is used only when no path is given, the machine is online and the set has
a hub id (the downstream sets).

Rules shared by every loader:

* a record that cannot be mapped (missing field, wrong type) is logged as a warning with its index and
  skipped;
* a file that is not in the expected format at all (not JSON, or no record has the source's keys)
  raises :class:`EditScopeError` naming the file and the expected format;
* ``limit`` keeps the first N *mapped* records; JSON-lines files stop reading there.

``load_benchmark(name, path=None, limit=None)`` is the front door; ``BENCHMARKS`` lists the names.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .cases import Case, ConflictCase, MultiHopCase, Probe, RoundTripCase
from .errors import EditScopeError, InputError
from .paths import shared_data

log = logging.getLogger(__name__)

__all__ = ["BENCHMARKS", "Benchmark", "ChoiceItem", "QAItem", "SummaryItem", "load_benchmark"]


# -- downstream record types -----------------------------------------------------------------------------

@dataclass(frozen=True)
class ChoiceItem:
    """A multiple-choice item: ``choices[label]`` is correct (PIQA; SST-2 with negative/positive)."""

    context: str
    choices: tuple[str, ...]
    label: int
    id: str = ""


@dataclass(frozen=True)
class QAItem:
    """An open question with its accepted answers (NQ-open; GSM8K keeps the worked solution too)."""

    question: str
    answers: tuple[str, ...]
    solution: str = ""
    id: str = ""


@dataclass(frozen=True)
class SummaryItem:
    dialogue: str
    summary: str
    id: str = ""


# -- reading -------------------------------------------------------------------------------------------

class _Skip(Exception):
    """A record that cannot be mapped; the message says why."""


def _read_json_records(path: Path, fmt: str) -> Iterator[Any]:
    """Records of a JSON array or of a JSON-lines file (read lazily line by line)."""
    with path.open(encoding="utf-8") as f:
        head = f.read(1)
        while head and head.isspace():
            head = f.read(1)
        f.seek(0)
        if head == "[":
            try:
                data = json.load(f)
            except json.JSONDecodeError as exc:
                raise EditScopeError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}); expected {fmt}") from None
            yield from data
            return
        if head != "{":
            raise EditScopeError(f"{path} is not a JSON list or JSON lines file; expected {fmt}")
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                if lineno == 1:
                    raise EditScopeError(f"{path} is not valid JSON lines; expected {fmt}") from None
                yield _BadLine(lineno)


@dataclass(frozen=True)
class _BadLine:
    lineno: int


def _map_records(records: Iterable[Any], mapper: Callable[[dict, int], Any], *, path: Path, fmt: str,
                 signature: tuple[str, ...], limit: int | None) -> list:
    """Map records, skipping (and logging) the malformed ones; reject a file in the wrong format."""
    out: list = []
    seen_signature = False
    for index, record in enumerate(records):
        if limit is not None and len(out) >= limit:
            break
        if isinstance(record, dict) and all(k in record for k in signature):
            seen_signature = True
        elif index >= 20 and not seen_signature:
            break
        try:
            if isinstance(record, _BadLine):
                raise _Skip(f"line {record.lineno} is not valid JSON")
            if not isinstance(record, dict):
                raise _Skip(f"expected an object, got {type(record).__name__}")
            out.append(mapper(record, index))
        except (_Skip, KeyError, TypeError, ValueError, IndexError, AttributeError, InputError) as exc:
            reason = f"missing field {exc.args[0]!r}" if isinstance(exc, KeyError) else str(exc)
            log.warning("%s: record %d skipped: %s", path.name, index, reason)
    if not seen_signature and not (limit == 0):
        raise EditScopeError(
            f"{path} does not look like {fmt}: no record has the fields {', '.join(signature)}")
    return out


def _text(value: Any, what: str) -> str:
    if isinstance(value, dict) and "str" in value:
        value = value["str"]
    if not isinstance(value, str) or not value.strip():
        raise _Skip(f"{what} is empty or not text")
    return value


def _template(prompt: str, subject: str) -> str:
    """A prompt with the subject's last occurrence turned into '{}' (kept if it already has one)."""
    if "{}" in prompt:
        return prompt
    at = prompt.rfind(subject)
    if at < 0:
        raise _Skip(f"the subject {subject!r} does not occur in the prompt")
    esc = lambda s: s.replace("{", "{{").replace("}", "}}")  # noqa: E731
    return esc(prompt[:at]) + "{}" + esc(prompt[at + len(subject):])


def _dedupe(items: Iterable[str]) -> tuple[str, ...]:
    out: list[str] = []
    for item in items:
        if isinstance(item, str) and item.strip() and item not in out:
            out.append(item)
    return tuple(out)


# -- CounterFact family --------------------------------------------------------------------------------

CF_SIGNATURE = ("case_id", "requested_rewrite")
CF_FORMAT = "CounterFact (ROME schema: case_id, requested_rewrite{prompt, subject, target_new, target_true})"
EASY_SIGNATURE = ("prompt", "target_new", "subject", "ground_truth")


def _counterfact_case(r: dict, index: int, source: str = "counterfact") -> Case:
    rw = r["requested_rewrite"]
    subject = _text(rw["subject"], "subject")
    prompt = _text(rw["prompt"], "prompt")
    if "{}" not in prompt:
        raise _Skip("the prompt has no '{}' for the subject")
    old = _text(rw["target_true"], "target_true")
    new = _text(rw["target_new"], "target_new")
    paraphrases = _dedupe(r.get("paraphrase_prompts") or ())
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
        distracting_neighbourhood=_dedupe(r.get("distracting_neighborhood_prompts") or ()),
        generation_prompts=_dedupe(r.get("generation_prompts") or ()),
        provenance=f"{source}:case_id={case_id}",
    )


def _easyedit_case(r: dict, index: int, source: str = "counterfact") -> Case:
    subject = _text(r["subject"], "subject")
    prompt = _template(_text(r["prompt"], "prompt"), subject)
    old = _text(r["ground_truth"], "ground_truth")
    new = _text(r["target_new"], "target_new")
    neighbours = ()
    if r.get("locality_prompt") and r.get("locality_ground_truth"):
        neighbours = (Probe(r["locality_prompt"], _text(r["locality_ground_truth"], "locality_ground_truth")),)
    case_id = r.get("case_id", index)
    return Case(
        id=f"{source}:{case_id}",
        relation_id="",
        relation="",
        prompt=prompt,
        subject=subject,
        target_true=old,
        targets_new=(new,),
        paraphrases=_dedupe([r.get("rephrase_prompt")]),
        neighbourhood=neighbours,
        provenance=f"{source}-easyedit:case_id={case_id}",
    )


def _with_yao(case: Case, r: dict) -> Case:
    """Add Yao et al. 2023 portability/locality fields of a CounterFact or zsRE record to its case."""
    from dataclasses import replace

    changes: dict[str, Any] = {}
    port = r.get("portability")
    if isinstance(port, dict) and port.get("New Question") and port.get("New Answer"):
        changes["one_hop"] = case.one_hop + (Probe(port["New Question"], str(port["New Answer"]),
                                                   target=case.target_new),)
    alt = r.get("alternative_subject")
    if isinstance(alt, str) and alt.strip():
        changes["aliases"] = case.aliases + (alt,)
        question = r.get("alter_subject_question")
        if isinstance(question, str) and question.strip():
            changes["one_hop"] = changes.get("one_hop", case.one_hop) + (
                Probe(question, case.target_new, target=case.target_new),)
    other = r.get("unrelated_relation")
    if isinstance(other, dict) and other.get("question") and other.get("object"):
        changes["attributes"] = case.attributes + (Probe(other["question"], str(other["object"])),)
    inverse = r.get("inverse question")
    if isinstance(inverse, str) and inverse.strip():
        changes["reverse"] = Probe(inverse, case.subject, target=case.target_new)
    return replace(case, **changes) if changes else case


def load_counterfact(path: Path, limit: int | None = None) -> list[Case]:
    """CounterFact in the ROME schema, or EasyEdit's one-paraphrase edit split (detected per file)."""
    records = list(_read_json_records(path, CF_FORMAT))
    first = next((r for r in records if isinstance(r, dict)), {})
    if "requested_rewrite" not in first and all(k in first for k in EASY_SIGNATURE):
        return _map_records(records, _easyedit_case, path=path, limit=limit, signature=EASY_SIGNATURE,
                            fmt="EasyEdit CounterFact (prompt, subject, target_new, ground_truth)")
    return _map_records(records, lambda r, i: _with_yao(_counterfact_case(r, i), r), path=path,
                        fmt=CF_FORMAT, signature=CF_SIGNATURE, limit=limit)


def load_counterfact_plus(path: Path, limit: int | None = None) -> list[Case]:
    """CounterFact+: CounterFact records with ``distracting_neighborhood_prompts`` (required here)."""
    sig = ("case_id", "requested_rewrite", "distracting_neighborhood_prompts")
    return _map_records(_read_json_records(path, "CounterFact+"),
                        lambda r, i: _counterfact_case(r, i, "counterfact_plus"), path=path,
                        fmt="CounterFact+ (CounterFact records with distracting_neighborhood_prompts)",
                        signature=sig, limit=limit)


# -- zsRE ------------------------------------------------------------------------------------------------

ZSRE_SIGNATURE = ("subject", "src", "alt", "answers")


def _zsre_case(r: dict, index: int) -> Case:
    subject = _text(r["subject"], "subject")
    question = _text(r["src"], "src")
    answers = r["answers"]
    if not isinstance(answers, list) or not answers:
        raise _Skip("answers is empty")
    neighbours = ()
    if r.get("loc") and r.get("loc_ans"):
        neighbours = (Probe(str(r["loc"]), str(r["loc_ans"])),)
    case = Case(
        id=f"zsre:{index}",
        relation_id="",
        relation="",
        prompt=_template(question, subject),
        subject=subject,
        target_true=str(answers[0]),
        targets_new=(_text(r["alt"], "alt"),),
        paraphrases=_dedupe([r.get("rephrase")]),
        neighbourhood=neighbours,
        provenance=f"zsre:index={index}",
    )
    return _with_yao(case, r)


def load_zsre(path: Path, limit: int | None = None) -> list[Case]:
    """zsRE in MEND's eval schema (also Yao et al.'s zsRE portability files)."""
    return _map_records(_read_json_records(path, "zsRE"), _zsre_case, path=path, signature=ZSRE_SIGNATURE,
                        fmt="zsRE (MEND eval schema: subject, src, alt, answers, rephrase, loc, loc_ans)",
                        limit=limit)


def _zsre_inverse_case(r: dict, index: int) -> Case:
    # The inverse-relation file has no loc/loc_ans; the rest is zsRE.
    return _zsre_case(r, index)


# -- Yao et al. 2023 -----------------------------------------------------------------------------------

def load_yao2023(path: Path, limit: int | None = None) -> list[Case]:
    """Any of Yao et al.'s portability/locality files: CounterFact- or zsRE-based, detected per file."""
    records = list(_read_json_records(path, "a Yao et al. 2023 portability/locality file"))
    first = next((r for r in records if isinstance(r, dict)), {})
    if "requested_rewrite" in first:
        return _map_records(records, lambda r, i: _with_yao(_counterfact_case(r, i), r), path=path,
                            fmt=CF_FORMAT, signature=CF_SIGNATURE, limit=limit)
    return _map_records(records, _zsre_case, path=path, signature=ZSRE_SIGNATURE,
                        fmt="zsRE-based Yao et al. file", limit=limit)


# -- MQuAKE ----------------------------------------------------------------------------------------------

MQUAKE_SIGNATURE = ("case_id", "requested_rewrite", "questions", "new_answer")


def _hops(items: Any) -> tuple[Probe, ...]:
    return tuple(Probe(_text(h["cloze"], "cloze"), _text(h["answer"], "answer")) for h in items or ())


def _mquake_case(r: dict, index: int) -> MultiHopCase:
    cid = r["case_id"]
    rewrites = r["requested_rewrite"]
    if not isinstance(rewrites, list) or not rewrites:
        raise _Skip("requested_rewrite is empty")
    edits = []
    for k, rw in enumerate(rewrites):
        edits.append(Case(
            id=f"mquake:{cid}:{k}",
            relation_id=str(rw.get("relation_id") or ""),
            relation=str(rw.get("relation_id") or ""),
            prompt=_text(rw["prompt"], "prompt"),
            subject=_text(rw["subject"], "subject"),
            target_true=_text(rw["target_true"], "target_true"),
            targets_new=(_text(rw["target_new"], "target_new"),),
            paraphrases=_dedupe([rw.get("question")]),
            provenance=f"mquake:case_id={cid}",
        ))
    return MultiHopCase(
        id=f"mquake:{cid}",
        edits=tuple(edits),
        questions=_dedupe(r["questions"]),
        answer=_text(r["answer"], "answer"),
        answer_aliases=_dedupe(r.get("answer_alias") or ()),
        new_answer=_text(r["new_answer"], "new_answer"),
        new_answer_aliases=_dedupe(r.get("new_answer_alias") or ()),
        single_hops=_hops(r.get("single_hops")),
        new_single_hops=_hops(r.get("new_single_hops")),
        provenance=f"mquake:case_id={cid}",
    )


def load_mquake(path: Path, limit: int | None = None) -> list[MultiHopCase]:
    """MQuAKE-CF-3k, MQuAKE-T and MQuAKE-hard (one schema)."""
    return _map_records(_read_json_records(path, "MQuAKE"), _mquake_case, path=path, signature=MQUAKE_SIGNATURE,
                        fmt="MQuAKE (case_id, requested_rewrite[], questions, answer, new_answer)", limit=limit)


# -- RippleEdits -----------------------------------------------------------------------------------------

RIPPLE_SIGNATURE = ("edit", "Relation_Specificity")
_RIPPLE_AXES = ("Relation_Specificity", "Logical_Generalization", "Subject_Aliasing",
                "Compositionality_I", "Compositionality_II", "Forgetfulness")


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
    statement = _text(ed["prompt"], "edit prompt").strip()
    original = ed.get("original_fact") or ed.get("previous_fact") or {}
    new = ed.get("target_label") or ed.get("target")
    old = original.get("target_label") or original.get("target") or ""
    body = statement.rstrip(".")
    if not new:
        # The released files phrase the edit as "<prompt> <new target>." and the original fact the same way.
        orig_body = str(original.get("prompt") or "").rstrip(".")
        if not orig_body:
            raise _Skip("the edit has no target label and no original fact to recover it from")
        k = 0
        while k < min(len(body), len(orig_body)) and body[k] == orig_body[k]:
            k += 1
        k = body.rfind(" ", 0, k + 1)
        new, old = body[k + 1:], orig_body[k + 1:]
    if not body.endswith(new):
        raise _Skip("the edit prompt does not end with its target")
    cloze = body[: len(body) - len(new)].rstrip()
    specificity = _ripple_queries(r.get("Relation_Specificity"))
    subject = ed.get("subject_label") or ed.get("subject")
    if not subject:
        same = [p for p, _, sid in specificity + _ripple_queries(r.get("Forgetfulness"))
                if sid == str(ed.get("subject_id"))]
        subject = _guess_subject(cloze, same)
    if not subject or subject not in cloze:
        raise _Skip("the subject cannot be found in the edit prompt")
    one_hop = [Probe(p, a, target=new) for axis in ("Logical_Generalization", "Compositionality_I",
                                                    "Compositionality_II") for p, a, _ in _ripple_queries(r.get(axis))]
    return Case(
        id=f"ripple_edits:{r.get('example_type', 'example')}:{index}",
        relation_id=str(ed.get("relation") or ""),
        relation=str(ed.get("relation") or "").replace("_", " ").lower(),
        prompt=_template(cloze, subject),
        subject=subject,
        target_true=str(old or ""),
        targets_new=(new,),
        paraphrases=_dedupe(p for p, _, _ in _ripple_queries(r.get("Subject_Aliasing"))),
        attributes=tuple(Probe(p, a) for p, a, _ in specificity + _ripple_queries(r.get("Forgetfulness"))),
        one_hop=tuple(one_hop),
        provenance=f"ripple_edits:{r.get('example_type', '')}:index={index}",
    )


def load_ripple_edits(path: Path, limit: int | None = None) -> list[Case]:
    """RippleEdits (Cohen et al. 2024): ``popular``/``random``/``recent`` files.

    Mapping: Subject_Aliasing test prompts become paraphrases; Relation_Specificity and Forgetfulness
    become attributes (answers that must survive); Logical_Generalization and both Compositionality axes
    become one-hop probes whose answers hold after the edit.
    """
    return _map_records(_read_json_records(path, "RippleEdits"), _ripple_case, path=path,
                        signature=RIPPLE_SIGNATURE, limit=limit,
                        fmt="RippleEdits (edit, Relation_Specificity, Logical_Generalization, ...)")


# -- Li et al. 2024: ConflictEdit and RoundEdit ---------------------------------------------------------

def _label(x: Any, what: str) -> str:
    if isinstance(x, dict):
        x = x.get("label")
    return _text(x, what)


def _prompt_file(path: Path, name: str) -> dict[str, list[str]]:
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
        prompt=_text(rel["prompt"], "relation prompt"),
        subject=_label(e["subject"], "subject"),
        target_true=_label(e[old_key], old_key),
        targets_new=(_label(e["new_object"], "new_object"),),
        paraphrases=_dedupe([str(rel.get("query", "")).format(_label(e["subject"], "subject"))]),
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
            raise _Skip("a conflict needs exactly two edits")
        cid = f"conflictedit:{kind}:{index}"
        pair = tuple(_pitfall_edit(e, f"{cid}:edit-{k + 1}") for k, e in enumerate(edits))
        tied = tuple(Probe(_text(t["relation"]["prompt"], "prompt").format(_label(t["subject"], "subject")),
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

    return _map_records(_read_json_records(path, "ConflictEdit"), mapper, path=path, limit=limit,
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
            raise _Skip("true_objects is empty")
        return RoundTripCase(
            id=f"roundedit:{path.stem}:{index}", relation_id=rid, relation=str(rel.get("label") or ""),
            prompt=_text(rel["prompt"], "relation prompt"), subject=_label(e["subject"], "subject"),
            object=_label(e["object"], "object"), new_object=_label(e["new_object"], "new_object"),
            true_objects=objects, prompts=tuple(prompts.get(rid, ())), type=str(r.get("type") or ""),
            provenance=f"roundedit:{path.name}:index={index}",
        )

    return _map_records(_read_json_records(path, "RoundEdit"), mapper, path=path, limit=limit,
                        signature=("type", "edit", "true_objects"),
                        fmt="RoundEdit (type, edit{relation, subject, object, new_object}, true_objects[])")


# -- downstream sets -----------------------------------------------------------------------------------

def _labels_file(path: Path) -> Path:
    """PIQA's labels file beside the questions: ``x.jsonl`` -> ``x-labels.lst`` (any ``.first200`` kept)."""
    stem, _, rest = path.name.partition(".")
    candidate = path.with_name(f"{stem}-labels.{rest.rsplit('.', 1)[0]}.lst" if "." in rest[:-6] else
                               f"{stem}-labels.lst")
    if candidate.is_file():
        return candidate
    found = sorted(path.parent.glob(f"{stem}-labels*.lst"))
    if not found:
        raise EditScopeError(f"no PIQA labels file beside {path} (expected {stem}-labels*.lst)")
    return found[0]


def load_piqa(path: Path, limit: int | None = None, labels: Path | None = None) -> list[ChoiceItem]:
    label_path = Path(labels) if labels else _labels_file(path)
    label_lines = [ln.strip() for ln in label_path.read_text(encoding="utf-8").splitlines() if ln.strip()]

    def mapper(r: dict, index: int) -> ChoiceItem:
        if index >= len(label_lines):
            raise _Skip("no label for this line")
        label = int(label_lines[index])
        if label not in (0, 1):
            raise _Skip(f"label {label} is not 0 or 1")
        return ChoiceItem(context=_text(r["goal"], "goal"), choices=(_text(r["sol1"], "sol1"), _text(r["sol2"], "sol2")),
                          label=label, id=f"piqa:{index}")

    return _map_records(_read_json_records(path, "PIQA"), mapper, path=path, limit=limit,
                        signature=("goal", "sol1", "sol2"), fmt="PIQA JSON lines (goal, sol1, sol2)")


def load_sst2(path: Path, limit: int | None = None) -> list[ChoiceItem]:
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if not header or [h.strip().lower() for h in header[:2]] != ["sentence", "label"]:
            raise EditScopeError(f"{path} is not an SST-2 TSV file (expected the header 'sentence<TAB>label')")
        out: list[ChoiceItem] = []
        for index, row in enumerate(reader):
            if limit is not None and len(out) >= limit:
                break
            try:
                if len(row) < 2 or row[1].strip() not in ("0", "1") or not row[0].strip():
                    raise _Skip("expected 'sentence<TAB>0|1'")
                out.append(ChoiceItem(context=row[0].strip(), choices=("negative", "positive"),
                                      label=int(row[1]), id=f"sst2:{index}"))
            except _Skip as exc:
                log.warning("%s: record %d skipped: %s", path.name, index, exc)
    return out


_GSM_FINAL = re.compile(r"####\s*([^\n]+)\s*$")


def load_gsm8k(path: Path, limit: int | None = None) -> list[QAItem]:
    def mapper(r: dict, index: int) -> QAItem:
        solution = _text(r["answer"], "answer")
        m = _GSM_FINAL.search(solution)
        if not m:
            raise _Skip("the answer has no '#### <number>' line")
        return QAItem(question=_text(r["question"], "question"), answers=(m.group(1).strip().replace(",", ""),),
                      solution=solution, id=f"gsm8k:{index}")

    return _map_records(_read_json_records(path, "GSM8K"), mapper, path=path, limit=limit,
                        signature=("question", "answer"), fmt="GSM8K JSON lines (question, answer ending '#### n')")


def load_nq_open(path: Path, limit: int | None = None) -> list[QAItem]:
    def mapper(r: dict, index: int) -> QAItem:
        answers = r["answer"]
        if isinstance(answers, str):
            answers = [answers]
        answers = _dedupe(answers)
        if not answers:
            raise _Skip("no answer")
        return QAItem(question=_text(r["question"], "question"), answers=answers, id=f"nq_open:{index}")

    return _map_records(_read_json_records(path, "NQ-open"), mapper, path=path, limit=limit,
                        signature=("question", "answer"), fmt="NQ-open JSON lines (question, answer[])")


def load_samsum(path: Path, limit: int | None = None) -> list[SummaryItem]:
    def mapper(r: dict, index: int) -> SummaryItem:
        return SummaryItem(dialogue=_text(r["dialogue"], "dialogue"), summary=_text(r["summary"], "summary"),
                           id=str(r.get("id", index)))

    return _map_records(_read_json_records(path, "SAMSum"), mapper, path=path, limit=limit,
                        signature=("dialogue", "summary"), fmt="SAMSum (id, dialogue, summary)")


# -- registry ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Benchmark:
    name: str
    loader: Callable[..., list]
    default: str  # path under the shared data folder
    description: str
    hub: tuple[str, ...] = ()  # datasets.load_dataset arguments (id, config, split) for online users


def _bm(name, loader, default, description, hub=()):
    return Benchmark(name, loader, default, description, tuple(hub))


_YAO = "yao2023_portability_locality"
BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (
    _bm("counterfact", load_counterfact, "counterfact/counterfact.json", "CounterFact (ROME schema or EasyEdit split)"),
    _bm("counterfact_plus", load_counterfact_plus, "counterfact_plus/counterfact_plus.json",
        "CounterFact+ with distracting neighbourhood prompts"),
    _bm("zsre", load_zsre, "zsre/zsre_mend_eval.subset.json", "zsRE, MEND eval schema"),
    _bm("mquake", load_mquake, "mquake/MQuAKE-hard.json", "MQuAKE (CF-3k, T or hard)"),
    _bm("ripple_edits", load_ripple_edits, "ripple_edits/popular.json", "RippleEdits (popular/random/recent)"),
    _bm("conflictedit", load_conflictedit, "pitfalls/GPT2-XL/reverse_edit.json",
        "ConflictEdit reverse/composite/coverage (Li et al. 2024)"),
    _bm("roundedit", load_roundedit, "pitfalls/GPT2-XL/easy.json", "RoundEdit easy/hard (Li et al. 2024)"),
    _bm("portability_one_hop", load_yao2023, f"{_YAO}/portability/one_hop/counterfact_portability_gpt4.json",
        "Yao et al. 2023 One-Hop portability (CounterFact or zsRE file)"),
    _bm("portability_subject_replace", load_yao2023,
        f"{_YAO}/portability/subject_replace/counterfact_subject_replace.json",
        "Yao et al. 2023 Subject-Replace (CounterFact or zsRE file)"),
    _bm("portability_inverse_relation", load_yao2023, f"{_YAO}/portability/inverse_relation/zsre_inverse_relation.json",
        "Yao et al. 2023 Inverse-Relation (zsRE)"),
    _bm("locality_distracting", load_yao2023, f"{_YAO}/locality/counterfact_distracting_neighbor.json",
        "Yao et al. 2023 Other-Attribution and Distract-Neighbour (CounterFact)"),
    _bm("piqa", load_piqa, "downstream/piqa/piqa_valid.first200.jsonl", "PIQA validation (+ labels file)",
        ("piqa", None, "validation")),
    _bm("sst2", load_sst2, "downstream/sst2/test-SentimentAnalysis.first200.tsv", "SST-2 validation (TSV)",
        ("glue", "sst2", "validation")),
    _bm("gsm8k", load_gsm8k, "downstream/gsm8k/test-reasoning.first200.jsonl", "GSM8K test",
        ("openai/gsm8k", "main", "test")),
    _bm("nq_open", load_nq_open, "downstream/nq_open/test-OpenDomainQA.first200.jsonl", "Natural Questions open",
        ("nq_open", None, "validation")),
    _bm("samsum", load_samsum, "downstream/samsum/test-summarization.first200.json", "SAMSum test",
        ("samsum", None, "test")),
)}


def _offline() -> bool:
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes")
               for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _from_hub(bench: Benchmark, expected: Path, limit: int | None) -> list:
    """Online fallback for the downstream sets: load the split from the hub and map rows like files."""
    try:
        import datasets
    except ImportError:  # pragma: no cover - datasets is a dependency
        raise EditScopeError(f"{bench.name}: no local file at {expected} and the datasets package is missing") from None
    hub_id, config, split = bench.hub
    try:
        ds = datasets.load_dataset(hub_id, config, split=split if limit is None else f"{split}[:{limit}]")
    except Exception as exc:  # noqa: BLE001 - any hub failure is reported as one line
        raise EditScopeError(f"{bench.name}: no local file at {expected} and the hub failed ({type(exc).__name__})") from None
    rows = list(ds)
    if bench.name == "piqa":
        return [ChoiceItem(r["goal"], (r["sol1"], r["sol2"]), int(r["label"]), f"piqa:{i}") for i, r in enumerate(rows)]
    if bench.name == "sst2":
        return [ChoiceItem(r["sentence"], ("negative", "positive"), int(r["label"]), f"sst2:{i}")
                for i, r in enumerate(rows)]
    if bench.name == "gsm8k":
        return [QAItem(r["question"], (_GSM_FINAL.search(r["answer"]).group(1).strip(),), r["answer"], f"gsm8k:{i}")
                for i, r in enumerate(rows)]
    if bench.name == "nq_open":
        return [QAItem(r["question"], tuple(r["answer"]), id=f"nq_open:{i}") for i, r in enumerate(rows)]
    return [SummaryItem(r["dialogue"], r["summary"], str(r.get("id", i))) for i, r in enumerate(rows)]


def load_benchmark(name: str, path: str | Path | None = None, limit: int | None = None, **kwargs) -> list:
    """Load benchmark ``name`` from ``path`` (default: its file under the shared data folder)."""
    bench = BENCHMARKS.get(name)
    if bench is None:
        raise InputError(f"unknown benchmark {name!r}; choose one of {', '.join(sorted(BENCHMARKS))}")
    if limit is not None and limit < 0:
        raise InputError("the limit must not be negative")
    if path is None:
        expected = shared_data() / bench.default
        if not expected.is_file():
            if bench.hub and not _offline():
                return _from_hub(bench, expected, limit)
            raise EditScopeError(f"{bench.name}: no path given and the expected local file {expected} is missing"
                                 + ("" if bench.hub else "; pass --path to your copy"))
        p = expected
    else:
        p = Path(path)
        if not p.is_file():
            raise EditScopeError(f"{bench.name}: the file {p} does not exist")
    return bench.loader(p, limit=limit, **kwargs)
