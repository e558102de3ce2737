"""Yao et al. 2023's portability and locality files: each is CounterFact- or zsRE-based, told apart by
its records (the schema most of them carry). The fields they add are mapped by :func:`.counterfact.with_yao`."""

from __future__ import annotations

from pathlib import Path

from ..cases import Case
from ._io import map_records, pick_format, read_records
from .counterfact import CF_SIGNATURE, counterfact_with_yao
from .zsre import ZSRE_SIGNATURE, zsre_case


def load_yao2023(path: Path, limit: int | None = None) -> list[Case]:
    """Any of Yao et al.'s portability/locality files: CounterFact- or zsRE-based, detected per file."""
    records = list(read_records(path, "a Yao et al. 2023 portability/locality file"))
    if pick_format(records, {"counterfact": CF_SIGNATURE, "zsre": ZSRE_SIGNATURE}, "zsre") == "counterfact":
        return counterfact_with_yao(records, path, limit)
    return map_records(records, zsre_case, path=path, signature=ZSRE_SIGNATURE,
                       fmt="zsRE-based Yao et al. file", limit=limit)
