"""Small value types shared by methods, metrics and the UI."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InputError


@dataclass(frozen=True)
class Request:
    """One requested edit: ``prompt.format(subject)`` should continue with ``target_new``.

    ``prompt`` is a template with a single ``{}`` standing for the subject (CounterFact's convention).
    Targets are plain strings without the leading space; :mod:`editcore.text` adds it when tokenising.
    """

    prompt: str
    subject: str
    target_new: str
    target_true: str | None = None

    @property
    def text(self) -> str:
        return self.prompt.format(self.subject)

    def validate(self) -> "Request":
        if not self.subject or not self.subject.strip():
            raise InputError("the subject is empty")
        if self.prompt.count("{}") != 1:
            if self.subject in self.prompt:
                raise InputError("the prompt must use '{}' for the subject (got the subject written out)")
            raise InputError(f"the subject {self.subject!r} does not occur in the prompt")
        if not self.target_new or not self.target_new.strip():
            raise InputError("the new target is empty")
        if self.target_true is not None and _norm(self.target_true) == _norm(self.target_new):
            raise InputError(f"the new target {self.target_new!r} equals the current answer")
        return self


def _norm(s: str) -> str:
    return " ".join(s.split()).casefold()
