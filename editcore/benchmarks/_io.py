"""Reading benchmark files and mapping their records: the rules every loader of this package follows.

* a record that cannot be mapped (missing field, wrong type) is logged as a warning with its index and
  skipped;
* a file that is not in the expected format at all (not JSON, or no record has the source's keys)
  raises :class:`EditScopeError` naming the file and the expected format;
* ``limit`` keeps the first N *mapped* records; JSON-lines files stop reading there.

The module is private to the package; its names carry no underscore because every loader uses them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import EditScopeError, InputError

# The package logs under one name, ``editcore.benchmarks``, whichever loader skipped the record.
log = logging.getLogger(__package__)


class Skip(Exception):
    """A record that cannot be mapped; the message says why."""


@dataclass(frozen=True)
class BadLine:
    """A line of a JSON-lines file that does not parse (the lines around it still count)."""

    lineno: int


def read_records(path: Path, fmt: str) -> Iterator[Any]:
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
                # Judged with the rest of the file: a bad first line is skipped like any other, and a file
                # none of whose lines parse is refused by map_records (no record has the source's keys).
                yield BadLine(lineno)


def map_records(records: Iterable[Any], mapper: Callable[[dict, int], Any], *, path: Path, fmt: str,
                signature: tuple[str, ...], limit: int | None) -> list:
    """Map records, skipping (and logging) the malformed ones; reject a file in the wrong format.

    A file counts as the right format once one record has every key of ``signature``; if none of the
    first 20 records has them, reading stops there and the file is rejected."""
    out: list = []
    seen_signature = False
    for index, record in enumerate(records):
        if limit is not None and len(out) >= limit:
            break
        if has_signature(record, signature):
            seen_signature = True
        elif index >= 20 and not seen_signature:
            break
        try:
            if isinstance(record, BadLine):
                raise Skip(f"line {record.lineno} is not valid JSON")
            if not isinstance(record, dict):
                raise Skip(f"expected an object, got {type(record).__name__}")
            out.append(mapper(record, index))
        except (Skip, KeyError, TypeError, ValueError, IndexError, AttributeError, InputError) as exc:
            warn_skipped(path, index, f"missing field {exc.args[0]!r}" if isinstance(exc, KeyError) else str(exc))
    if not seen_signature and not (limit == 0):
        raise EditScopeError(
            f"{path} does not look like {fmt}: no record has the fields {', '.join(signature)}")
    return out


def has_signature(record: Any, signature: tuple[str, ...]) -> bool:
    return isinstance(record, dict) and all(k in record for k in signature)


def pick_format(records: list, signatures: dict[str, tuple[str, ...]], default: str) -> str:
    """The schema of a file judged on its records as a whole: the name in ``signatures`` whose keys the most
    records carry (ties go to the first listed), ``default`` when no record carries any. One malformed
    record (the first, say) therefore cannot decide the format of the file."""
    counts = {name: sum(has_signature(r, sig) for r in records) for name, sig in signatures.items()}
    best = max(counts, key=lambda name: counts[name])  # max keeps the first of equal counts
    return best if counts[best] else default


def warn_skipped(path: Path, index: int, reason: object) -> None:
    log.warning("%s: record %d skipped: %s", path.name, index, reason)


def need_text(value: Any, what: str) -> str:
    """``value`` as non-blank text (a ``{"str": ...}`` wrapper is unwrapped), else :class:`Skip`."""
    if isinstance(value, dict) and "str" in value:
        value = value["str"]
    if not isinstance(value, str) or not value.strip():
        raise Skip(f"{what} is empty or not text")
    return value


def subject_template(prompt: str, subject: str) -> str:
    """A prompt with the subject's last occurrence turned into '{}' (kept if it already has one).

    Other braces are escaped, so ``str.format`` fills only the subject's slot. A prompt that already
    has '{}' is not checked further (free-form input in :mod:`editcore.cases` also wants exactly one)."""
    if "{}" in prompt:
        return prompt
    at = prompt.rfind(subject)
    if at < 0:
        raise Skip(f"the subject {subject!r} does not occur in the prompt")
    esc = lambda s: s.replace("{", "{{").replace("}", "}}")  # noqa: E731
    return esc(prompt[:at]) + "{}" + esc(prompt[at + len(subject):])


def unique_texts(items: Iterable[str]) -> tuple[str, ...]:
    """The non-blank strings of ``items`` in first-seen order, each once (anything else is dropped)."""
    out: list[str] = []
    for item in items:
        if isinstance(item, str) and item.strip() and item not in out:
            out.append(item)
    return tuple(out)
