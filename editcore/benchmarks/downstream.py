"""Downstream task sets, read before and after an edit to see whether the model still works: PIQA and
SST-2 (multiple choice), GSM8K and NQ-open (open answers), SAMSum (summaries). Each becomes a small typed
record; :func:`from_hub_rows` maps the same sets when they come from the hub instead of a file."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import EditScopeError
from ._io import Skip, map_records, need_text, read_records, unique_texts, warn_skipped


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
            raise Skip("no label for this line")
        label = int(label_lines[index])
        if label not in (0, 1):
            raise Skip(f"label {label} is not 0 or 1")
        return ChoiceItem(context=need_text(r["goal"], "goal"),
                          choices=(need_text(r["sol1"], "sol1"), need_text(r["sol2"], "sol2")),
                          label=label, id=f"piqa:{index}")

    return map_records(read_records(path, "PIQA"), mapper, path=path, limit=limit,
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
                    raise Skip("expected 'sentence<TAB>0|1'")
                out.append(ChoiceItem(context=row[0].strip(), choices=("negative", "positive"),
                                      label=int(row[1]), id=f"sst2:{index}"))
            except Skip as exc:
                warn_skipped(path, index, exc)
    return out


_GSM_FINAL = re.compile(r"####\s*([^\n]+)\s*$")


def load_gsm8k(path: Path, limit: int | None = None) -> list[QAItem]:
    def mapper(r: dict, index: int) -> QAItem:
        solution = need_text(r["answer"], "answer")
        m = _GSM_FINAL.search(solution)
        if not m:
            raise Skip("the answer has no '#### <number>' line")
        return QAItem(question=need_text(r["question"], "question"),
                      answers=(m.group(1).strip().replace(",", ""),), solution=solution, id=f"gsm8k:{index}")

    return map_records(read_records(path, "GSM8K"), mapper, path=path, limit=limit,
                       signature=("question", "answer"), fmt="GSM8K JSON lines (question, answer ending '#### n')")


def load_nq_open(path: Path, limit: int | None = None) -> list[QAItem]:
    def mapper(r: dict, index: int) -> QAItem:
        answers = r["answer"]
        if isinstance(answers, str):
            answers = [answers]
        answers = unique_texts(answers)
        if not answers:
            raise Skip("no answer")
        return QAItem(question=need_text(r["question"], "question"), answers=answers, id=f"nq_open:{index}")

    return map_records(read_records(path, "NQ-open"), mapper, path=path, limit=limit,
                       signature=("question", "answer"), fmt="NQ-open JSON lines (question, answer[])")


def load_samsum(path: Path, limit: int | None = None) -> list[SummaryItem]:
    def mapper(r: dict, index: int) -> SummaryItem:
        return SummaryItem(dialogue=need_text(r["dialogue"], "dialogue"),
                           summary=need_text(r["summary"], "summary"), id=str(r.get("id", index)))

    return map_records(read_records(path, "SAMSum"), mapper, path=path, limit=limit,
                       signature=("dialogue", "summary"), fmt="SAMSum (id, dialogue, summary)")


def from_hub_rows(name: str, rows: list[dict]) -> list:
    """Rows of downstream set ``name``, under the hub's column names, as the same record types (without
    the file loaders' per-record checks)."""
    if name == "piqa":
        return [ChoiceItem(r["goal"], (r["sol1"], r["sol2"]), int(r["label"]), f"piqa:{i}") for i, r in enumerate(rows)]
    if name == "sst2":
        return [ChoiceItem(r["sentence"], ("negative", "positive"), int(r["label"]), f"sst2:{i}")
                for i, r in enumerate(rows)]
    if name == "gsm8k":
        return [QAItem(r["question"], (_GSM_FINAL.search(r["answer"]).group(1).strip(),), r["answer"], f"gsm8k:{i}")
                for i, r in enumerate(rows)]
    if name == "nq_open":
        return [QAItem(r["question"], tuple(r["answer"]), id=f"nq_open:{i}") for i, r in enumerate(rows)]
    return [SummaryItem(r["dialogue"], r["summary"], str(r.get("id", i))) for i, r in enumerate(rows)]
