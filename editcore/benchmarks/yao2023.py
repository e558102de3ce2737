"""Yao et al. 2023's portability and locality files: each is CounterFact- or zsRE-based, told apart by
its first record. The fields they add are mapped by :func:`.counterfact.with_yao`."""

from __future__ import annotations

from pathlib import Path

from ..cases import Case
from ._io import map_records, read_records
from .counterfact import counterfact_with_yao
from .zsre import ZSRE_SIGNATURE, zsre_case


def load_yao2023(path: Path, limit: int | None = None) -> list[Case]:
    """Any of Yao et al.'s portability/locality files: CounterFact- or zsRE-based, detected per file."""
    records = list(read_records(path, "a Yao et al. 2023 portability/locality file"))
    first = next((r for r in records if isinstance(r, dict)), {})
    if "requested_rewrite" in first:
        return counterfact_with_yao(records, path, limit)
    return map_records(records, zsre_case, path=path, signature=ZSRE_SIGNATURE,
                       fmt="zsRE-based Yao et al. file", limit=limit)
