"""On-disk cache of computed results (edits + evaluations, sequential runs, benchmark tables).

Only plain JSON goes in: values are stored as ``json.dumps`` strings, never pickled objects, so a cache
written by one version of the code can always be read (or safely ignored) by another, and nothing
executable is ever loaded from disk. Keys are the SHA-256 of the canonical JSON of everything that
determines a result: the model fingerprint, the method and its version, the hyper-parameters and the
case (plus whatever else a caller adds, e.g. a sequential run's seed).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
from typing import Any

from . import paths

log = logging.getLogger(__name__)

# Bump when the *shape* of cached results changes, so stale entries are never rendered.
SCHEMA = 1

_lock = threading.Lock()
_caches: dict[str, Any] = {}


def canonical_json(obj: Any) -> str:
    """Deterministic JSON: sorted keys, no whitespace, tuples as lists; NaN/inf are refused."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False,
                      default=_default)


def _default(obj: Any):
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    raise TypeError(f"not JSON-serialisable in a cache key: {type(obj).__name__}")


def make_key(*, kind: str, fingerprint: str, method: str | None = None, method_version: str | None = None,
             hparams: dict | None = None, case: Any = None, extra: dict | None = None) -> str:
    """SHA-256 of the canonical JSON of what determines a result."""
    payload = {"schema": SCHEMA, "kind": kind, "fingerprint": fingerprint, "method": method,
               "method_version": method_version, "hparams": hparams or {}, "case": case, "extra": extra or {}}
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


def _clean(obj: Any) -> Any:
    """NaN and infinities are not JSON; store them as None (the charts show a gap)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


class ResultsCache:
    """A diskcache directory holding JSON strings keyed by :func:`make_key` hashes."""

    def __init__(self, directory: str | None = None):
        import diskcache

        self.directory = str(directory or paths.sub("results"))
        self._cache = diskcache.Cache(self.directory, size_limit=2**30)

    def get(self, key: str) -> dict | None:
        raw = self._cache.get(key)
        if raw is None:
            return None
        if not isinstance(raw, str):  # something other than our JSON strings: ignore it
            log.warning("ignoring a non-JSON cache entry %s", key[:12])
            return None
        try:
            return json.loads(raw)
        except ValueError:
            log.warning("ignoring an unreadable cache entry %s", key[:12])
            return None

    def put(self, key: str, value: dict) -> dict:
        text = json.dumps(_clean(value), allow_nan=False, default=_default)
        self._cache.set(key, text)
        return json.loads(text)

    def delete(self, key: str) -> None:
        self._cache.delete(key)

    def __contains__(self, key: str) -> bool:
        return key in self._cache

    def __len__(self) -> int:
        return len(self._cache)

    def clear(self) -> None:
        self._cache.clear()


def default_cache() -> ResultsCache:
    """One cache object per results directory (EDITSCOPE_HOME may differ between tests)."""
    directory = str(paths.sub("results"))
    with _lock:
        if directory not in _caches:
            _caches[directory] = ResultsCache(directory)
        return _caches[directory]
