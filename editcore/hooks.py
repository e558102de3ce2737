"""Named, temporary forward hooks: the one way editcore reads or rewrites activations.

Every hook here is a context manager that removes what it registered when the ``with`` block ends, also on
exceptions, so no hook can outlive the code that needed it (ROME's ``nethook`` and TransformerLens work the
same way). A point of a model is either a module or a name that the architecture adapter resolves:
``"mlp_out.7"`` (slot and layer, see :meth:`editcore.models.arch.ArchAdapter.module_name`), ``"final_norm"``,
or a dotted module path such as ``"model.layers.7.mlp.down_proj"``.

* :func:`on_input` / :func:`on_output` — call ``fn`` on a module's positional input or its output; what ``fn``
  returns (if not ``None``) replaces it.
* :func:`edit_output` — rewrite the hidden states a module returns (the first element of a tuple output).
* :func:`capture` — keep a module's input or output.
* :func:`run_until` — run a forward that stops as soon as a module's input or output is there.
* :func:`record_calls` — keep the ``(args, kwargs)`` of every call of some modules (what a replay re-runs).
* :func:`count` — how many forward hooks a model carries now (the tests' "no hook survives").
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

Point = nn.Module | str


class StopForward(Exception):
    """Raised from a hook to end a forward pass once the activation it needs has been taken."""


def first(out: Any) -> Any:
    """The hidden states of a module's output (blocks return tuples whose first element they are)."""
    return out[0] if isinstance(out, (tuple, list)) else out


def resolve(owner, point: Point) -> nn.Module:
    """The module named by ``point`` in ``owner`` (an :class:`~editcore.models.LM`, an adapter or a model)."""
    if isinstance(point, nn.Module):
        return point
    adapter = getattr(owner, "adapter", owner if hasattr(owner, "module_name") else None)
    model = getattr(owner, "model", owner)
    if adapter is not None:
        slot, _, layer = point.rpartition(".")
        if slot and layer.isdigit() and "." not in slot:
            return adapter.module(slot, int(layer))
        if point in ("final_norm", "embed", "unembed"):
            return adapter.module(point)
    return model.get_submodule(point)


@contextlib.contextmanager
def removing(handles: list) -> Iterator[list]:
    """Remove every handle in ``handles`` (which the block may still append to) when the block ends."""
    try:
        yield handles
    finally:
        while handles:
            handles.pop().remove()


def add(module: nn.Module, fn: Callable, *, pre: bool = False, with_kwargs: bool = False):
    """Register ``fn`` as a forward (pre-)hook and return its handle; the caller removes it (the edit scope
    keeps patch hooks for the patch's lifetime). Everything else should use the context managers below."""
    if pre:
        return module.register_forward_pre_hook(fn, with_kwargs=with_kwargs)
    return module.register_forward_hook(fn, with_kwargs=with_kwargs)


@contextlib.contextmanager
def on_input(module: nn.Module, fn: Callable[[tuple], tuple | None]) -> Iterator[None]:
    """``fn(args)`` before each call of ``module``; a returned tuple replaces its positional arguments."""
    with removing([add(module, lambda _m, args: fn(args), pre=True)]):
        yield


@contextlib.contextmanager
def on_output(module: nn.Module, fn: Callable[[tuple, Any], Any]) -> Iterator[None]:
    """``fn(args, output)`` after each call of ``module``; a returned value replaces its output."""
    with removing([add(module, lambda _m, args, out: fn(args, out))]):
        yield


def replace_hidden(out: Any, hidden: torch.Tensor) -> Any:
    """``out`` with its hidden states (see :func:`first`) replaced by ``hidden``."""
    if isinstance(out, tuple):
        return (hidden,) + tuple(out[1:])
    return hidden


@contextlib.contextmanager
def edit_output(module: nn.Module | None, edit: Callable[[torch.Tensor], torch.Tensor] | None) -> Iterator[None]:
    """Every call of ``module`` returns ``edit(hidden states)`` in place of its hidden states. Does nothing
    when either is ``None`` (callers pass an optional edit straight through)."""
    if module is None or edit is None:
        yield
        return
    with on_output(module, lambda _a, out: replace_hidden(out, edit(first(out)))):
        yield


@contextlib.contextmanager
def capture(module: nn.Module, which: str = "out", into: dict | None = None, key: str = "x",
            keep: str = "last") -> Iterator[dict]:
    """Keep the last (``keep="first"``: the first) input (``which="in"``, first positional argument) or output
    of ``module`` in the dict this yields (under ``key``)."""
    got = into if into is not None else {}
    put = got.__setitem__ if keep == "last" else got.setdefault
    if which == "in":
        ctx = on_input(module, lambda args: put(key, args[0]))
    else:
        ctx = on_output(module, lambda _a, out: put(key, first(out)))
    with ctx:
        yield got


@contextlib.contextmanager
def together(contexts) -> Iterator[None]:
    """Enter every hook context of ``contexts`` (e.g. one :func:`on_input` per layer) for one block."""
    with contextlib.ExitStack() as stack:
        for ctx in contexts:
            stack.enter_context(ctx)
        yield


def run_until(module: nn.Module, forward: Callable[[], object], which: str = "in") -> torch.Tensor:
    """Run ``forward`` until ``module`` is reached and return its input (first positional argument) or output.
    Nothing after it is computed."""
    got: dict[str, torch.Tensor] = {}

    def stop_in(args):
        got["x"] = args[0]
        raise StopForward

    def stop_out(_args, out):
        got["x"] = first(out)
        raise StopForward

    with (on_input(module, stop_in) if which == "in" else on_output(module, stop_out)):
        try:
            forward()
        except StopForward:
            pass
    if "x" not in got:
        raise RuntimeError(f"the forward pass did not reach {type(module).__name__}")
    return got["x"]


def record_calls(modules: Sequence[nn.Module], forward: Callable[[], object], stop_at_last: bool = False):
    """Run ``forward`` keeping the ``(args, kwargs)`` of every call of ``modules``, in call order.

    Returns ``(output, calls)``; ``calls`` is ``None`` unless each module was called exactly once with its
    hidden states as the first positional argument, which is what a replay needs. With ``stop_at_last`` the
    forward ends once the last module is reached (the output is then ``None``)."""
    calls: list[tuple[tuple, dict]] = []
    last = modules[-1] if modules else None

    def record(module, args, kwargs):
        calls.append((args, kwargs))
        if stop_at_last and module is last:
            raise StopForward

    out = None
    with removing([add(m, record, pre=True, with_kwargs=True) for m in modules]):
        try:
            out = forward()
        except StopForward:
            if not stop_at_last:
                raise
    ok = len(calls) == len(modules) and all(len(a) >= 1 and isinstance(a[0], torch.Tensor) for a, _ in calls)
    return out, (calls if ok else None)


def count(model: nn.Module) -> int:
    """Forward and forward-pre hooks registered on ``model`` and its submodules right now."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
