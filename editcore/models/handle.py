"""``LM``: the shared, read-only handle on one loaded model."""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field

import torch
from torch import nn

from ..scope import EditScope, Patch, param_digest
from .kernels import install as install_kernels
from .arch import ArchAdapter


@dataclass(eq=False)
class LM:
    """A loaded causal LM plus what every edit needs: tokenizer, adapter, fingerprint and a lock.

    The base model is shared (one per process, across browser sessions) and must be treated as
    read-only: every change goes through :meth:`scope`, and every read that must see the *unedited*
    model goes through :meth:`scope` with no patch as well, so it waits for any edit in progress.
    """

    model: nn.Module
    tokenizer: object
    name: str
    fingerprint: str
    adapter: ArchAdapter = field(init=False)
    lock: threading.RLock = field(init=False, repr=False)
    info: dict = field(default_factory=dict)
    kernels: tuple[str, ...] = field(init=False, default=())  # CPU kernels installed (models/kernels.py)

    def __post_init__(self):
        self.model.eval()
        self.model.requires_grad_(False)
        self.adapter = ArchAdapter(self.model)
        self.kernels = install_kernels(self.model)  # same products, faster shapes on CPU
        self.lock = threading.RLock()
        if getattr(self.tokenizer, "pad_token_id", None) is None and getattr(self.tokenizer, "eos_token", None):
            self.tokenizer.pad_token = self.tokenizer.eos_token

    @classmethod
    def from_model(cls, model: nn.Module, tokenizer, name: str = "in-memory", info: dict | None = None) -> "LM":
        """Wrap an already-built model (tests use tiny random ones); the fingerprint hashes its weights."""
        config = json.dumps(model.config.to_dict(), sort_keys=True, default=str)
        fp = hashlib.sha256(f"{name}\n{config}\n{param_digest(model)}".encode()).hexdigest()[:16]
        return cls(model, tokenizer, name, fp, info=info or {})

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def scope(self, *patches: Patch) -> EditScope:
        """``with lm.scope(patch) as s: ... s.model ...`` — see :mod:`editcore.scope`."""
        return EditScope(self.model, self.lock, patches, self.tokenizer)

    def digest(self) -> str:
        with self.lock:
            return param_digest(self.model)
