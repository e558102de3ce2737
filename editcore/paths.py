"""Where EditScope keeps converted models, layer statistics and result caches."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """``$EDITSCOPE_HOME`` or ``~/.cache/editscope``; created on first use."""
    p = Path(os.environ.get("EDITSCOPE_HOME") or Path.home() / ".cache" / "editscope")
    p.mkdir(parents=True, exist_ok=True)
    return p


def sub(*parts: str) -> Path:
    p = home().joinpath(*parts)
    p.mkdir(parents=True, exist_ok=True)
    return p


def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


def shared_data() -> Path:
    """The public benchmark samples beside the checkout (``../shared/data``), or ``$EDITSCOPE_SHARED_DATA``."""
    env = os.environ.get("EDITSCOPE_SHARED_DATA")
    return Path(env) if env else repo_root().parent / "shared" / "data"


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks (cache keys of corpora and converted models)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
