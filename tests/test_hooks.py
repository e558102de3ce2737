"""editcore.hooks: every hook is gone when its context ends (also on errors), and the helpers read and
rewrite what they say they do."""

import pytest
import torch

import tiny
from editcore import hooks
from editcore.methods import available, get_method
from editcore.methods.base import load_hparams
from editcore.types import Request


def _forward(lm, text="The Louvre is located in"):
    ids = torch.tensor([lm.tokenizer(text)["input_ids"]])
    return lambda: lm.model.base_model(input_ids=ids, use_cache=False)


def _contexts(lm):
    mod = lm.adapter.module("mlp_out", 1)
    return {
        "on_input": lambda: hooks.on_input(mod, lambda args: None),
        "on_output": lambda: hooks.on_output(mod, lambda args, out: None),
        "edit_output": lambda: hooks.edit_output(mod, lambda x: x * 2),
        "capture": lambda: hooks.capture(mod, "in"),
        "together": lambda: hooks.together([hooks.capture(mod), hooks.capture(lm.adapter.block(0), "in")]),
    }


@pytest.mark.parametrize("name", ["on_input", "on_output", "edit_output", "capture", "together"])
def test_no_hook_survives_its_context(name):
    lm = tiny.lm("llama")
    make = _contexts(lm)[name]
    assert hooks.count(lm.model) == 0
    with make():
        assert hooks.count(lm.model) >= 1
        _forward(lm)()
    assert hooks.count(lm.model) == 0
    with pytest.raises(RuntimeError, match="boom"):
        with make():
            raise RuntimeError("boom")
    assert hooks.count(lm.model) == 0


def test_run_until_and_record_calls_leave_nothing_behind():
    lm = tiny.lm("gpt2")
    forward = _forward(lm)
    x = hooks.run_until(lm.adapter.module("mlp_out", 1), forward, "in")
    assert x.shape[-1] == lm.adapter.d_mlp
    _out, calls = hooks.record_calls([lm.adapter.block(0), lm.adapter.block(2)], forward, stop_at_last=True)
    assert calls is not None and len(calls) == 2
    assert hooks.count(lm.model) == 0
    with pytest.raises(RuntimeError, match="did not reach"):
        hooks.run_until(torch.nn.Linear(2, 2), forward)
    assert hooks.count(lm.model) == 0


def test_edit_output_rewrites_and_capture_sees_it():
    lm = tiny.lm("llama")
    mod = lm.adapter.module("mlp_out", 1)
    forward = _forward(lm)
    with hooks.capture(mod) as plain:
        forward()
    with hooks.edit_output(mod, lambda x: x * 0), hooks.capture(lm.adapter.block(1)) as after:
        forward()
    with hooks.capture(lm.adapter.block(1)) as before:
        forward()
    assert plain["x"].abs().sum() > 0
    assert not torch.allclose(after["x"], before["x"])  # zeroing the MLP output changed the block's output


def test_names_resolve_through_the_adapter():
    lm = tiny.lm("gpt2")
    assert hooks.resolve(lm, "mlp_out.1") is lm.adapter.module("mlp_out", 1)
    assert hooks.resolve(lm, "final_norm") is lm.adapter.module("final_norm")
    assert hooks.resolve(lm, "transformer.h.0.mlp") is lm.model.get_submodule("transformer.h.0.mlp")
    assert hooks.resolve(lm, lm.adapter.block(0)) is lm.adapter.block(0)


@pytest.mark.parametrize("method", available())
def test_no_method_leaves_a_hook(method, corpus, tmp_home):
    lm = tiny.lm("llama")
    m = get_method(method)
    fields = set(m.Hparams.__dataclass_fields__)
    small = {k: v for k, v in {"stats_corpus": corpus, "stats_samples": 1500, "v_num_grad_steps": 2,
                               "context_prefixes": 1, "context_tokens": 2, "steps": 2, "layer": 1,
                               "layers": [0, 1], "encoder": "hashed-bow"}.items() if k in fields}
    tiny.train_if_needed(lm, m)  # MEND, SERAC: a tiny component, trained in seconds in this test's home
    edit = m.compute(lm, [Request("{} is located in the city of", "The Louvre", "London")],
                     load_hparams(m.name, m.Hparams, None, small))
    assert hooks.count(lm.model) == 0
    with lm.scope(edit.patch):
        _forward(lm)()
    assert hooks.count(lm.model) == 0
