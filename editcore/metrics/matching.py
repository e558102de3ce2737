"""Answer matching for generated text (used by portability exact-match, MQuAKE and closed-book QA).

``normalise`` follows the SQuAD/NQ convention: case-fold, drop punctuation and the articles a/an/the,
collapse whitespace. A greedy continuation *matches* an answer when its normalised form starts with the
normalised answer at a word boundary (the continuation may go on: "Paris, France. It is" matches
"Paris"; "Parisian" does not).
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable

_PUNCT = str.maketrans({c: " " for c in string.punctuation + "‘’“”–—"})


def normalise(s: str) -> str:
    s = s.casefold().translate(_PUNCT)
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def starts_with_answer(continuation: str, answers: Iterable[str]) -> bool:
    cont = normalise(continuation)
    for a in answers:
        na = normalise(a)
        if na and (cont == na or cont.startswith(na + " ")):
            return True
    return False


def exact_match(prediction: str, answers: Iterable[str]) -> bool:
    """Normalised equality with any gold answer (NQ-open's exact match)."""
    p = normalise(prediction)
    return any(p == normalise(a) for a in answers if normalise(a))


def first_line(s: str) -> str:
    return s.strip().split("\n")[0].strip()
