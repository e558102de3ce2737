"""Downstream probe sets for the general-abilities block: the real task files (a path, the copies under
``../shared/data/downstream``, or the hub when it is reachable) or, offline, the freely licensed sets shipped
in ``data/probes/`` (``data/probes/README.md`` gives each file's source and licence).

Every loader returns plain dicts in one schema per task:

* ``sentiment``     {"text", "label"}  (1 = positive, 0 = negative; SST-2 style)
* ``piqa``          {"goal", "sol1", "sol2", "label"}  (label = index of the right solution)
* ``qa``            {"question", "answers": [..]}  (closed-book, NQ-open style)
* ``arithmetic``    {"question", "answer", "solution"}  (the final number as a string; GSM8K's worked
  solution, ending in ``#### n``)
* ``summarisation`` {"dialogue", "summary"}  (SAMSum style)

A ``path`` may point to the real files (``../shared/data/downstream/...``): SST-2 TSV
(``sentence<TAB>label`` with a header), PIQA JSONL with its ``-labels.lst`` beside it, NQ-open JSONL
(``question``, ``answer`` list), GSM8K JSONL (answer ends in ``#### n``), SAMSum JSON list.
"""

from __future__ import annotations

import functools
import json
import os
import re
from pathlib import Path

from .errors import InputError

PROBE_DIR = Path(__file__).resolve().parents[1] / "data" / "probes"
TASKS = ("sentiment", "piqa", "qa", "arithmetic", "summarisation")


def _jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _gsm_number(answer: str) -> str:
    tail = answer.split("####")[-1]
    m = re.search(r"-?[\d,]*\.?\d+", tail)
    if not m:
        raise InputError(f"no final number in a GSM8K answer: {answer[-40:]!r}")
    return m.group(0).replace(",", "")


def _from_path(task: str, path: Path) -> list[dict]:
    if task == "sentiment":
        rows = path.read_text(encoding="utf-8").splitlines()
        out = []
        for line in rows[1:] if rows and not rows[0].rstrip().split("\t")[-1].strip().isdigit() else rows:
            if "\t" in line:
                text, label = line.rsplit("\t", 1)
                out.append({"text": text.strip(), "label": int(label)})
        return out
    if task == "piqa":
        recs = _jsonl(path)
        lab = path.with_name(path.name.replace("_valid", "_valid-labels").replace(".jsonl", ".lst"))
        if not lab.is_file():
            cands = sorted(path.parent.glob("*labels*.lst"))
            if not cands:
                raise InputError(f"no PIQA labels file next to {path}")
            lab = cands[0]
        labels = [int(x) for x in lab.read_text().split()]
        return [{**r, "label": y} for r, y in zip(recs, labels)]
    if task == "qa":
        return [{"question": r["question"], "answers": list(r["answer"] if isinstance(r["answer"], list) else [r["answer"]])}
                for r in _jsonl(path)]
    if task == "arithmetic":
        return [{"question": r["question"], "answer": _gsm_number(str(r["answer"])), "solution": str(r["answer"])}
                for r in _jsonl(path)]
    if task == "summarisation":
        data = json.loads(path.read_text(encoding="utf-8"))
        return [{"dialogue": r["dialogue"].replace("\r\n", "\n"), "summary": r["summary"]} for r in data]
    raise InputError(f"unknown probe task {task!r}; known: {', '.join(TASKS)}")


def load_probe(task: str, path: str | Path | None = None, limit: int | None = None) -> list[dict]:
    """The probe set for ``task``: the shipped one, or the real file at ``path``; first ``limit`` items."""
    if task not in TASKS:
        raise InputError(f"unknown probe task {task!r}; known: {', '.join(TASKS)}")
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise InputError(f"probe file {p} does not exist")
        items = _from_path(task, p)
    else:
        items = _jsonl(PROBE_DIR / f"{task}.jsonl")
    return items[:limit] if limit is not None else items


# The real task files (../shared/data/downstream) and the benchmark names that read them or the hub.
REAL_FILES = {"sentiment": ("sst2", "downstream/sst2/test-SentimentAnalysis.first200.tsv"),
              "piqa": ("piqa", "downstream/piqa/piqa_valid.first200.jsonl"),
              "qa": ("nq_open", "downstream/nq_open/test-OpenDomainQA.first200.jsonl"),
              "arithmetic": ("gsm8k", "downstream/gsm8k/test-reasoning.first200.jsonl"),
              "summarisation": ("samsum", "downstream/samsum/test-summarization.first200.json")}
BUNDLED = {"sentiment": "EditScope-written sentences", "piqa": "EditScope-written PIQA-style items",
           "qa": "NQ-open test, first 200 (CC BY-SA 3.0)", "arithmetic": "GSM8K test, first 200 (MIT)",
           "summarisation": "EditScope-written dialogues"}


@functools.lru_cache(maxsize=1)
def _hub_ok() -> bool:
    if any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes")
           for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")):
        return False
    from .models.registry import _hub_reachable

    return _hub_reachable(timeout=2.0)


def _from_items(task: str, items: list) -> list[dict]:
    """Records of :mod:`editcore.benchmarks.downstream` in this module's schema."""
    if task == "sentiment":
        return [{"text": it.context, "label": it.label} for it in items]
    if task == "piqa":
        return [{"goal": it.context, "sol1": it.choices[0], "sol2": it.choices[1], "label": it.label} for it in items]
    if task == "qa":
        return [{"question": it.question, "answers": list(it.answers)} for it in items]
    if task == "arithmetic":
        return [{"question": it.question, "answer": it.answers[0], "solution": it.solution} for it in items]
    return [{"dialogue": it.dialogue.replace("\r\n", "\n"), "summary": it.summary} for it in items]


@functools.lru_cache(maxsize=32)
def _real_items(task: str, limit: int | None) -> tuple[tuple[dict, ...], str] | None:
    from .paths import shared_data

    name, rel = REAL_FILES[task]
    local = shared_data() / rel
    if local.is_file():
        return tuple(_from_path(task, local)[:limit] if limit is not None else _from_path(task, local)), str(local)
    if _hub_ok():
        from .benchmarks import load_benchmark
        from .errors import EditScopeError

        try:
            return tuple(_from_items(task, load_benchmark(name, limit=limit))), f"hub: {name}"
        except EditScopeError:
            return None
    return None


def probe_items(task: str, path: str | Path | None = None, limit: int | None = None) -> tuple[list[dict], str]:
    """``(items, source)`` for ``task``: the file at ``path``; else the real task file or the hub; else the
    bundled set. ``source`` names where they came from (results carry it)."""
    if path is not None:
        return load_probe(task, path, limit), str(path)
    if task not in TASKS:
        raise InputError(f"unknown probe task {task!r}; known: {', '.join(TASKS)}")
    real = _real_items(task, limit)
    if real is not None:
        return [dict(x) for x in real[0]], real[1]
    return load_probe(task, None, limit), f"bundled: {BUNDLED[task]}"


def heldout_text(path: str | Path | None = None, max_chars: int | None = None) -> str:
    """Held-out text for perplexity: ``data/probes/heldout.txt`` or a file such as WikiText's ``wiki.test.raw``."""
    p = Path(path) if path is not None else PROBE_DIR / "heldout.txt"
    if not p.is_file():
        raise InputError(f"held-out text {p} does not exist")
    t = p.read_text(encoding="utf-8")
    return t[:max_chars] if max_chars else t
