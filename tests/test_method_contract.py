"""The contract every registered method keeps (editcore.methods.base), checked for all of them at once.

For every method in ``editcore.methods.available()`` and tiny random models of a plain (GPT-2) and gated
(Llama, Gemma-3) family: ``compute`` leaves the model bit-identical and every parameter frozen, the edit is
a patch of finite deltas on real parameters, applying it inside ``lm.scope()`` changes the model and leaving
the scope restores it bit-for-bit — also when an exception is raised inside — and a method computed inside
a scope (sequential editing) leaves the edited state as it found it. Bad input raises ``InputError`` before
anything is touched.
"""

import dataclasses

import pytest
import torch

import tiny
from editcore import hooks
from editcore.errors import InputError
from editcore.methods import available, get_method
from editcore.methods.base import Edit, load_hparams
from editcore.scope import Patch, param_digest
from editcore.types import Request

FAMILIES = ("gpt2", "llama", "gemma3")
REQ = Request("{} is located in the city of", "The Louvre", "London", "Paris")

# Settings that keep each method fast on a 3-layer random model; applied only to fields a method has.
_TINY = {
    "layer": 1,
    "layers": (1,),
    "stats_samples": 1500,
    "context_prefixes": 1,
    "context_tokens": 3,
    "encoder": "hashed-bow",  # IKE's retrieval, SERAC's classifier: the deterministic test encoder
}


class _Boom(Exception):
    pass


# Caches (context prefixes, statistics) go to a temporary home: no test sees another's files.
pytestmark = pytest.mark.usefixtures("tmp_home")


@pytest.fixture(scope="module")
def models():
    return {f: tiny.lm(f) for f in FAMILIES}


def _tiny_hparams(name, corpus):
    method = get_method(name)
    overrides = {}
    for f in dataclasses.fields(method.Hparams):
        lo = f.metadata.get("lo")
        if f.name in _TINY:
            overrides[f.name] = list(_TINY[f.name]) if isinstance(_TINY[f.name], tuple) else _TINY[f.name]
        elif f.name == "stats_corpus":
            overrides[f.name] = corpus
        elif "steps" in f.name and isinstance(f.default, int) and not isinstance(f.default, bool):
            overrides[f.name] = max(lo if lo is not None else 1, min(f.default, 3))
    return method, load_hparams(name, method.Hparams, None, overrides)


def test_registry_lists_the_baselines():
    assert {"ft", "ft_l", "kn"} <= set(available())


def _read(lm) -> torch.Tensor:
    """The next-token distribution after the edit prompt, as the model gives it now."""
    from editcore.text import next_token_logprobs

    with torch.no_grad():
        return next_token_logprobs(lm, [REQ.text])


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("name", available())
def test_method_contract(name, family, models, corpus):
    lm = models[family]
    method, hp = _tiny_hparams(name, corpus)
    tiny.train_if_needed(lm, method)  # MEND, SERAC: a tiny component, trained in seconds in this test's home
    assert isinstance(method.name, str) and method.name == name
    assert isinstance(method.version, str) and method.version
    assert isinstance(method.batched, bool)
    d0 = lm.digest()
    read0 = _read(lm)

    edit = method.compute(lm, [REQ], hp)

    assert lm.digest() == d0, "compute changed the model"
    assert not any(p.requires_grad for p in lm.model.parameters()), "compute left a parameter trainable"
    assert isinstance(edit, Edit) and isinstance(edit.patch, Patch)
    params = dict(lm.model.named_parameters())
    for pname, delta in edit.patch.deltas.items():
        assert pname in params
        assert delta.shape == params[pname].shape
        assert torch.isfinite(delta).all()
    changes = (any(float(d.abs().max()) > 0 for d in edit.patch.deltas.values()) or edit.patch.hooks
               or edit.patch.rewrite is not None)
    assert changes, f"{name} produced an empty edit on {family}"

    with lm.scope(edit.patch) as scope:
        edited = param_digest(scope.model)
        if edit.patch.deltas:
            assert edited != d0
        else:  # hooks or an input rewrite: the weights stay, what the model says on the edit prompt changes
            assert edited == d0 and not torch.equal(_read(lm), read0)
        n_hooks = hooks.count(scope.model)
        # Sequential editing: a second compute inside the scope sees the edit and leaves it in place.
        method.compute(lm, [Request("The capital of {} is", "Japan", "Seoul", "Tokyo")], hp)
        assert param_digest(scope.model) == edited and hooks.count(scope.model) == n_hooks
    assert lm.digest() == d0

    with pytest.raises(_Boom):
        with lm.scope(edit.patch):
            raise _Boom
    assert lm.digest() == d0


@pytest.mark.parametrize("name", available())
def test_bad_input_touches_nothing(name, models, corpus):
    lm = models["llama"]
    method, hp = _tiny_hparams(name, corpus)
    tiny.train_if_needed(lm, method)  # so the input is checked, not the missing component
    d0 = lm.digest()
    with pytest.raises(InputError):
        method.compute(lm, [Request("The Louvre is located in", "The Louvre", "London")], hp)
    with pytest.raises(InputError):
        method.compute(lm, [Request("{} is located in", "The Louvre", "")], hp)
    assert lm.digest() == d0
