"""The fact catalog shipped with EditScope (``data/*.jsonl``) and the per-model knowledge check.

``load_catalog()`` gives the single facts as :class:`~editcore.cases.Case`; ``load_multihop()``,
``load_conflicts()`` and ``load_roundtrips()`` the other kinds. ``filter_cases`` narrows a list by
relation and free text for the dashboard. ``check_model`` asks a model every prompt of every fact and
``known_facts(model)`` reads the committed result (``data/catalog_check/<model>.json``).

Knowledge check rule (``check_model``): a prompt is answered when, teacher-forced, every token of the
expected answer or of its first word is the model's top-1 choice, i.e. greedy decoding starts with it.

Answer match rule for generated text (``answer_matches``): the greedy continuation, stripped of surrounding whitespace and
leading punctuation such as quotes, matches when it starts with the expected answer or with the
answer's first word, as whole words and compared case-insensitively. "Paris, France" matches "Paris";
"Parisian" does not; "the Seine" does not match "Seine"; "New York" matches "New York City". A fact is
*known* when its edit prompt matches.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from .cases import Case, ConflictCase, MultiHopCase, RoundTripCase
from .errors import EditScopeError

log = logging.getLogger(__name__)

DATA_DIR = Path(__file__).resolve().parents[1] / "data"
CHECK_DIR = DATA_DIR / "catalog_check"
MAX_NEW_TOKENS = 8


def _read_jsonl(path: Path, factory) -> list:
    if not path.is_file():
        raise EditScopeError(f"the catalog file {path} is missing; run scripts/build_catalog.py")
    out = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    out.append(factory(json.loads(line)))
                except (ValueError, KeyError, TypeError) as exc:
                    raise EditScopeError(f"{path.name} line {lineno} is not a valid record: {exc}") from None
    return out


@functools.lru_cache(maxsize=4)
def _load(name: str, data_dir: str) -> tuple:
    factory = {"facts": Case.from_dict, "multihop": MultiHopCase.from_dict,
               "conflicts": ConflictCase.from_dict, "roundtrip": RoundTripCase.from_dict}[name]
    return tuple(_read_jsonl(Path(data_dir) / f"{name}.jsonl", factory))


def load_catalog(data_dir: Path | None = None) -> list[Case]:
    """All single facts of the shipped catalog (cached; the cases are immutable)."""
    return list(_load("facts", str(data_dir or DATA_DIR)))


def load_multihop(data_dir: Path | None = None) -> list[MultiHopCase]:
    return list(_load("multihop", str(data_dir or DATA_DIR)))


def load_conflicts(data_dir: Path | None = None) -> list[ConflictCase]:
    return list(_load("conflicts", str(data_dir or DATA_DIR)))


def load_roundtrips(data_dir: Path | None = None) -> list[RoundTripCase]:
    return list(_load("roundtrip", str(data_dir or DATA_DIR)))


def get_fact(case_id: str, data_dir: Path | None = None) -> Case:
    for case in load_catalog(data_dir):
        if case.id == case_id:
            return case
    raise EditScopeError(f"no catalog fact with id {case_id!r}")


def relations(cases: Iterable[Case] | None = None) -> list[tuple[str, str, int]]:
    """(relation id, readable name, number of facts), in catalog order."""
    cases = load_catalog() if cases is None else list(cases)
    counts = Counter(c.relation_id for c in cases)
    names: dict[str, str] = {}
    for c in cases:
        names.setdefault(c.relation_id, c.relation)
    return [(rid, names[rid], counts[rid]) for rid in names]


def filter_cases(cases: Iterable[Case], relation: str | None = None, text: str | None = None,
                 ids: Iterable[str] | None = None) -> list[Case]:
    """Cases of one relation (id like "P276" or its name) whose subject/prompt/targets contain ``text``."""
    out = list(cases)
    if relation:
        rel = relation.casefold()
        out = [c for c in out if c.relation_id.casefold() == rel or c.relation.casefold() == rel]
    if text:
        needle = text.casefold()
        out = [c for c in out if needle in " ".join((c.edit_prompt, c.target_true, *c.targets_new,
                                                     *c.aliases)).casefold()]
    if ids is not None:
        wanted = set(ids)
        out = [c for c in out if c.id in wanted]
    return out


# -- answer matching -----------------------------------------------------------------------------------

_LEAD = re.compile(r"^[\s\"'“”‘’«»(\[:,-]+")


def _fold(text: str) -> str:
    return " ".join(text.split()).casefold()


def answer_matches(continuation: str, answer: str) -> bool:
    """Whether a greedy continuation gives ``answer`` (see the module docstring for the rule)."""
    if not answer or not answer.strip():
        return False
    got = _fold(_LEAD.sub("", continuation))
    want = _fold(answer)
    if not got:
        return False
    if _starts_with_word(got, want):
        return True
    first = want.split()[0].strip(",.;:")
    return bool(first) and _starts_with_word(got, first)


def _starts_with_word(text: str, prefix: str) -> bool:
    """``text`` starts with ``prefix`` and the prefix is not the start of a longer word."""
    return text.startswith(prefix) and (len(text) == len(prefix) or not text[len(prefix)].isalnum()
                                        or not prefix[-1:].isalnum())


# -- knowledge check -----------------------------------------------------------------------------------

def _prompts_of(case: Case) -> list[tuple[str, str, str]]:
    """(kind, prompt, expected answer) for every prompt of a fact whose answer holds before editing."""
    rows = [("edit", case.edit_prompt, case.target_true)]
    rows += [("paraphrase", p, case.target_true) for p in case.paraphrases]
    rows += [("neighbourhood", p.prompt, p.answer) for p in case.neighbourhood]
    rows += [("attribute", p.prompt, p.answer) for p in case.attributes]
    rows += [("one_hop", p.prompt, p.answer) for p in case.one_hop if p.target is None]
    if case.reverse:
        rows.append(("reverse", case.reverse.prompt, case.reverse.answer))
    return rows


def check_model(lm, cases: Sequence[Case] | None = None, max_new_tokens: int = MAX_NEW_TOKENS,
                batch_size: int = 32, progress=None) -> dict:
    """Ask the model every prompt of every fact; returns the JSON-ready report.

    A prompt counts as answered when, teacher-forced, every token of the expected answer (or of its
    first word) is the model's top-1 choice, which is exactly when greedy decoding would begin with it.
    One forward pass per prompt instead of ``max_new_tokens`` decoding steps makes the check of the
    whole catalog take minutes on a CPU instead of hours. The greedy continuation itself is recorded
    only for the edit prompts (for display).
    """
    from .decoding import greedy
    from .text import score_targets, target_ids

    cases = load_catalog() if cases is None else list(cases)
    rows = [(ci, kind, prompt, answer) for ci, case in enumerate(cases) for kind, prompt, answer in _prompts_of(case)]
    pairs = sorted({(r[2], r[3]) for r in rows})
    firsts = {(p, a): a.split()[0].strip(",.;:") for p, a in pairs}
    # Score each (prompt, answer) once; its first word needs a pass of its own only when the first
    # word's tokens are not a prefix of the answer's (otherwise the answer's per-token flags tell).
    ids = {a: target_ids(lm.tokenizer, a) for a in {a for _, a in pairs} | {f for f in firsts.values() if f}}
    extra = {(p, f) for (p, a), f in firsts.items() if f and ids[f] != ids[a][:len(ids[f])]}
    want = sorted(set(pairs) | extra, key=lambda pa: (len(pa[0]) + len(pa[1]), pa))  # similar lengths batch together
    flags: dict[tuple[str, str], list[bool]] = {}
    step = batch_size * 8
    for start in range(0, len(want), step):
        chunk = want[start:start + step]
        scores = score_targets(lm, [p for p, _ in chunk], [a for _, a in chunk], batch_size=batch_size)
        flags.update({pa: list(sc.token_correct) for pa, sc in zip(chunk, scores)})
        if progress:
            progress(min(start + len(chunk), len(want)), len(want) + len(cases))

    def first_word_ok(p: str, a: str) -> bool:
        f = firsts[(p, a)]
        if not f:
            return False
        if (p, f) in flags:
            return all(flags[(p, f)])
        return all(flags[(p, a)][:len(ids[f])])

    correct = {(p, a): all(flags[(p, a)]) or first_word_ok(p, a) for p, a in pairs}
    edit_prompts = sorted({case.edit_prompt for case in cases})
    outputs = dict(zip(edit_prompts, greedy(lm, edit_prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)))
    if progress:
        progress(len(want) + len(cases), len(want) + len(cases))
    facts: dict[str, dict] = {}
    for ci, kind, prompt, answer in rows:
        entry = facts.setdefault(cases[ci].id, {"relation_id": cases[ci].relation_id, "prompts": []})
        row = {"kind": kind, "prompt": prompt, "answer": answer, "correct": correct[(prompt, answer)]}
        if kind == "edit":
            row["output"] = outputs[prompt]
        entry["prompts"].append(row)
    by_kind: dict[str, list[int]] = {}
    by_relation: dict[str, list[int]] = {}
    for fid, entry in facts.items():
        entry["knows_fact"] = entry["prompts"][0]["correct"]
        for p in entry["prompts"]:
            tally = by_kind.setdefault(p["kind"], [0, 0])
            tally[0] += int(p["correct"])
            tally[1] += 1
        rel = by_relation.setdefault(entry["relation_id"], [0, 0])
        rel[0] += int(entry["knows_fact"])
        rel[1] += 1
    return {
        "model": getattr(lm, "name", "model"),
        "fingerprint": getattr(lm, "fingerprint", ""),
        "max_new_tokens": max_new_tokens,
        "match_rule": "teacher-forced: every token of the answer (or of its first word) is the top-1 choice",
        "summary": {
            "facts": len(facts),
            "known_facts": sum(e["knows_fact"] for e in facts.values()),
            "prompts": {k: {"correct": c, "total": t} for k, (c, t) in by_kind.items()},
            "relations": {k: {"known": c, "total": t} for k, (c, t) in by_relation.items()},
        },
        "facts": facts,
    }


def check_path(model_name: str, check_dir: Path | None = None) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", model_name.strip("/").split("/")[-1]) or "model"
    return (check_dir or CHECK_DIR) / f"{safe}.json"


def write_check(report: dict, model_name: str, check_dir: Path | None = None) -> Path:
    path = check_path(model_name, check_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return path


def load_check(model_name: str, check_dir: Path | None = None) -> dict | None:
    path = check_path(model_name, check_dir)
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def known_facts(model_name: str, check_dir: Path | None = None) -> set[str] | None:
    """Ids of the facts the model answers correctly (from the committed check); ``None`` if never checked."""
    report = load_check(model_name, check_dir)
    if report is None:
        return None
    return {fid for fid, entry in report["facts"].items() if entry.get("knows_fact")}


def summary_lines(report: dict) -> list[str]:
    s = report["summary"]
    lines = [f"{report['model']}: knows {s['known_facts']} of {s['facts']} facts"]
    for kind, t in s["prompts"].items():
        lines.append(f"  {kind:<14} {t['correct']:>5} / {t['total']:<5} prompts answered")
    for rid, t in s["relations"].items():
        lines.append(f"  {rid:<14} {t['known']:>5} / {t['total']:<5} facts known")
    return lines
