"""The edit scope: the single way an edit touches a model.

A :class:`Patch` is plain data (additive parameter deltas, forward hooks and/or an input rewrite). It is
applied inside
``lm.scope()``, which

* holds the model's lock for its whole life, so two callers (two browser sessions) never see each other's
  edits and nobody reads the model half-edited;
* snapshots every tensor a patch touches *before* touching it and restores it by copying the snapshot back
  (bit-for-bit; subtracting the delta would not be exact in floating point);
* restores on normal exit, on exceptions and on KeyboardInterrupt, and removes every hook and input rewrite
  it added.

Patches can be stacked (sequential editing) and rolled back one at a time. A patch may carry ``memory``
for the method that made it: :func:`applied_patches` lists the patches the open scopes hold on a model, so a
method computing the next edit of a sequence can read what its earlier edits stored (AlphaEdit's keys).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from . import hooks

log = logging.getLogger(__name__)

HookFn = Callable[..., object]


@dataclass(frozen=True)
class Hook:
    """A forward hook on the module named ``module``; ``pre`` selects a forward *pre*-hook.

    ``fn`` follows torch's signatures: ``fn(module, args, output) -> output | None`` or, with ``pre``,
    ``fn(module, args) -> args | None``.
    """

    module: str
    fn: HookFn
    pre: bool = False


@dataclass
class Patch:
    """A reversible change: ``deltas`` maps parameter names to tensors added to them (in the parameter's
    own layout); ``hooks`` are installed while the patch is active; ``rewrite``, if given, is applied to every
    prompt the model is given while the patch is active (through :func:`editcore.text.prompt_ids`, in the
    thread that applied it): it must return the prompt with text put before it, or the prompt unchanged (a
    method that prepends demonstrations or a retrieved edit). Methods that change no weight are patches too.
    ``memory`` is plain data for later edits in the same scope (see :func:`applied_patches`), keyed by the
    name of the method that reads it; each value is a tuple of records, so merged patches keep all of them."""

    deltas: dict[str, torch.Tensor] = field(default_factory=dict)
    hooks: tuple[Hook, ...] = ()
    label: str = ""
    rewrite: Callable[[str], str] | None = None
    memory: dict[str, tuple[Any, ...]] = field(default_factory=dict)

    def norms(self) -> dict[str, float]:
        return {name: float(d.float().norm()) for name, d in self.deltas.items()}

    def merged(self, other: "Patch") -> "Patch":
        deltas = dict(self.deltas)
        for name, d in other.deltas.items():
            deltas[name] = deltas[name] + d if name in deltas else d
        first, second = self.rewrite, other.rewrite
        rewrite = (lambda t: second(first(t))) if first and second else (first or second)
        memory = {k: tuple(self.memory.get(k, ())) + tuple(other.memory.get(k, ()))
                  for k in {**self.memory, **other.memory}}
        return Patch(deltas, self.hooks + other.hooks, f"{self.label}+{other.label}".strip("+"), rewrite, memory)


@dataclass
class _Frame:
    patch: Patch
    saved: dict[str, torch.Tensor | None]
    handles: list
    content: dict[str, int] = field(default_factory=dict)  # content_id of each saved tensor


class EditScope:
    """Context manager returned by ``LM.scope()``; see the module docstring."""

    def __init__(self, model: nn.Module, lock: threading.RLock, patches: tuple[Patch, ...] = (), tokenizer=None):
        self.model = model
        self.tokenizer = tokenizer  # whose prompts a patch's input rewrite applies to
        self._lock = lock
        self._initial = patches
        self._params = dict(model.named_parameters())
        self._base: dict[str, torch.Tensor] = {}
        self._base_content: dict[str, int] = {}
        self._stack: list[_Frame] = []
        self._open = False

    # ---- context protocol ----------------------------------------------------------------------
    def __enter__(self) -> "EditScope":
        self._lock.acquire()
        self._open = True
        _OPEN.setdefault(self.model, []).append(self)
        try:
            for p in self._initial:
                self.apply(p)
        except BaseException:
            self._close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._close()

    def _close(self) -> None:
        try:
            _finish_all([lambda f=f: _remove_hooks(f.handles) for f in reversed(self._stack)]
                        + [lambda n=n, t=t: self._copy_back(n, t, self._base_content[n])
                           for n, t in self._base.items()])
        finally:
            self._stack.clear()
            self._base.clear()
            self._base_content.clear()
            self._open = False
            open_ = _OPEN.get(self.model, [])
            if self in open_:
                open_.remove(self)
            self._lock.release()

    # ---- editing -------------------------------------------------------------------------------
    @property
    def depth(self) -> int:
        return len(self._stack)

    def apply(self, patch: Patch, *, checkpoint: bool = True) -> None:
        """Apply ``patch`` on top of what is already applied.

        With ``checkpoint`` the touched tensors are saved so :meth:`rollback` can undo exactly this patch;
        long sequential runs can pass ``checkpoint=False`` to save memory (the scope still restores the
        pristine model on exit).
        """
        if not self._open:
            raise RuntimeError("EditScope.apply outside its 'with' block")
        unknown = [n for n in patch.deltas if n not in self._params]
        if unknown:
            raise KeyError(f"patch touches unknown parameters: {unknown[:3]}")
        frame = _Frame(patch, {}, [])
        try:
            with torch.no_grad():
                for name, delta in patch.deltas.items():
                    param = self._params[name]
                    if delta.shape != param.shape:
                        raise ValueError(f"delta for {name} has shape {tuple(delta.shape)}, expected {tuple(param.shape)}")
                    if name not in self._base:
                        self._base[name] = param.detach().clone()
                        self._base_content[name] = content_id(param)
                    # Saved even without a checkpoint until the patch is fully in, so a failure half-way
                    # can put back exactly what was there.
                    frame.saved[name] = param.detach().clone()
                    frame.content[name] = content_id(param)
                    param.add_(delta.to(device=param.device, dtype=param.dtype))
            for hook in patch.hooks:
                frame.handles.append(hooks.add(self.model.get_submodule(hook.module), hook.fn, pre=hook.pre))
            if patch.rewrite is not None:
                if self.tokenizer is None:
                    raise ValueError("a patch with an input rewrite needs a scope that knows the tokenizer")
                frame.handles.append(_Rewrite(self.tokenizer, patch.rewrite))
        except BaseException:
            # Never leave a half-edited model behind.
            _finish_all([lambda: _remove_hooks(frame.handles)]
                        + [lambda n=n, t=t: self._copy_back(n, t, frame.content[n]) for n, t in frame.saved.items()])
            raise
        if not checkpoint:
            frame.saved = dict.fromkeys(frame.saved)
        self._stack.append(frame)

    def rollback(self, n: int = 1) -> None:
        """Undo the last ``n`` patches exactly."""
        for _ in range(n):
            if not self._stack:
                raise IndexError("nothing to roll back")
            frame = self._stack[-1]
            if any(v is None for v in frame.saved.values()):
                raise RuntimeError("this patch was applied without a checkpoint and cannot be rolled back alone")
            _finish_all([lambda: _remove_hooks(frame.handles)]
                        + [lambda n=name, t=t: self._copy_back(n, t, frame.content[n])
                           for name, t in frame.saved.items()])
            self._stack.pop()

    def _copy_back(self, name: str, saved: torch.Tensor, content: int) -> None:
        _put_back(self._params[name], saved, content)


# The scopes open on each model, outermost first. Only the thread holding the model's lock can have any open.
_OPEN: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def applied_patches(model: nn.Module) -> list[Patch]:
    """The patches the scopes open on ``model`` hold right now, in the order they were applied (outermost
    scope first). A method reads its earlier edits' ``memory`` from them; a rolled-back patch is gone."""
    return [frame.patch for scope in _OPEN.get(model, []) for frame in scope._stack]


class _Rewrite:
    """An active input rewrite, removed like a hook handle (LIFO with the frame's hooks)."""

    def __init__(self, tokenizer, fn):
        from .text import rewriting

        self._ctx = rewriting(tokenizer, fn)
        self._ctx.__enter__()

    def remove(self) -> None:
        self._ctx.__exit__(None, None, None)


def _remove_hooks(handles: list) -> None:
    while handles:
        handles.pop().remove()


def _finish_all(steps: list[Callable[[], None]]) -> None:
    """Run every step even if one raises (or a KeyboardInterrupt lands mid-way); re-raise the first error."""
    first: BaseException | None = None
    for step in steps:
        try:
            step()
        except BaseException as exc:  # noqa: BLE001 - restoring must finish whatever happens
            first = first or exc
    if first is not None:
        raise first


@contextlib.contextmanager
def scratch(model: nn.Module, names: list[str]) -> Iterator[None]:
    """Let a method modify the named parameters temporarily (e.g. fine-tuning to compute a delta);
    they are copied back on exit, whatever happens."""
    params = dict(model.named_parameters())
    saved = {n: params[n].detach().clone() for n in names}
    content = {n: content_id(params[n]) for n in names}
    try:
        yield
    finally:
        _finish_all([lambda n=n: _put_back(params[n], saved[n], content[n]) for n in saved])


# ---- naming what the weights hold (for caches of activations) --------------------------------------------
_next_content = itertools.count(1)


def content_id(t: torch.Tensor) -> int:
    """A number naming the values ``t`` holds now. It stays while ``t`` is not modified in place (autograd's
    version counter, which every in-place op moves) and a new one is drawn after; copying a saved tensor back
    (the scope's restore, :func:`scratch`) gives back the number it had when it was saved, so a restored
    model is recognised as the one before the edit. Writes through ``.data`` do not move the counter; nothing
    in editcore writes weights that way."""
    tag = getattr(t, "_editscope_content", None)
    if tag is None or tag[0] != t._version:
        tag = (t._version, next(_next_content))
        t._editscope_content = tag
    return tag[1]


def _put_back(param: torch.Tensor, saved: torch.Tensor, content: int) -> None:
    """Copy ``saved`` back into ``param`` and give it back the content id it had when it was saved."""
    with torch.no_grad():
        param.copy_(saved)
    param._editscope_content = (param._version, content)


def content_key(model: nn.Module) -> tuple[int, ...]:
    """:func:`content_id` of every parameter: equal keys mean equal weights (a key for cached activations)."""
    return tuple(content_id(p) for p in model.parameters())


def param_digest(model: nn.Module) -> str:
    """SHA-256 over every parameter and buffer's bytes, in name order (the tests' 'bit-identical')."""
    h = hashlib.sha256()
    tensors = dict(model.named_parameters())
    tensors.update({f"buffer:{n}": b for n, b in model.named_buffers()})
    for name in sorted(tensors):
        t = tensors[name].detach()
        h.update(name.encode())
        h.update(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
