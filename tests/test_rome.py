"""ROME on tiny random models (maths identities, restoring, input checks) and on the real Gemma (marked)."""

import math

import pytest
import torch

import tiny
from editcore.errors import InputError
from editcore.methods import get_method
from editcore.methods.base import load_hparams
from editcore.methods.speed import Speed
from editcore.scope import param_digest
from editcore.types import Request

REQ = Request("{} is located in the city of", "The Louvre", "London")


# Caches (context prefixes, statistics) go to a temporary home: no test sees another's files.
pytestmark = pytest.mark.usefixtures("tmp_home")


def _hp(corpus, **kw):
    base = {"layer": 1, "stats_samples": 1500, "stats_corpus": corpus, "v_num_grad_steps": 5,
            "context_prefixes": 2, "context_tokens": 3}
    base.update(kw)
    return load_hparams("rome", get_method("rome").Hparams, None, base)


def _output_for_key(lm, layer, key):
    module = lm.adapter.module("mlp_out", layer)
    with torch.no_grad():
        return module(key.to(lm.dtype)[None])[0].double()


@pytest.mark.parametrize("family", ["gpt2", "llama", "gemma3", "gpt_neox"])
@pytest.mark.parametrize("consistent", [False, True])
def test_update_is_rank_one_and_maps_key_to_value(family, consistent, corpus):
    lm = tiny.lm(family)
    before = param_digest(lm.model)
    edit = get_method("rome").compute(lm, [REQ], _hp(corpus, consistent_keys=consistent))
    assert param_digest(lm.model) == before, "compute() must not change the model"

    (name, delta), = edit.patch.deltas.items()
    assert name == lm.adapter.mlp_out_param_name(1)
    assert torch.linalg.matrix_rank(delta.double(), rtol=1e-5).item() == 1
    vec = edit.diagnostics["vectors"]
    key = vec["key"]
    # ROME's key is the plain prompt's; r-ROME's is the context average k*.
    assert torch.equal(key, vec["k_star"]) is consistent
    with lm.scope(edit.patch):
        after = _output_for_key(lm, 1, key)
    target = vec["v_target"]
    assert torch.allclose(after, target, rtol=1e-4, atol=1e-4 * float(target.norm()))
    assert param_digest(lm.model) == before, "the scope must restore the model"


def test_gated_key_is_down_proj_input(corpus):
    """For gated MLPs the key is act(gate(x)) * up(x) — checked against the MLP's own pieces."""
    from editcore.methods.common import module_io_at, subject_last_index

    lm = tiny.lm("llama")
    ids, idx = subject_last_index(lm.tokenizer, REQ.prompt, REQ.subject)
    x = module_io_at(lm, "mlp", 1, [ids], [idx], "in")
    mlp = lm.adapter.module("mlp", 1)
    with torch.no_grad():
        expect = mlp.act_fn(mlp.gate_proj(x)) * mlp.up_proj(x)
    got = module_io_at(lm, "mlp_out", 1, [ids], [idx], "in")
    assert got.shape[-1] == lm.adapter.d_mlp
    assert torch.allclose(got, expect, atol=1e-6)


@pytest.mark.parametrize("samples", [1500, 20])
def test_c_inverse_k_is_solved_against_the_statistics(samples, corpus):
    """C^-1 k* through C's cached Cholesky factor, or (20 tokens: C singular, no factor) through C itself."""
    from editcore.methods import layer_stats as stats

    lm = tiny.lm("llama")
    edit = get_method("rome").compute(lm, [REQ], _hp(corpus, stats_samples=samples))
    vec = edit.diagnostics["vectors"]
    cov = stats.second_moment(lm, 1, samples, corpus)
    assert (stats.cholesky_factors(lm, [1], samples, corpus)[1] is None) == (samples == 20)
    assert not edit.diagnostics["identity_cov"]
    if samples == 20:  # what an LU solve of a singular C gives; the edit says so
        assert torch.allclose(vec["c_inv_k"], torch.linalg.solve(cov, vec["k_star"]))
        assert any("not positive definite" in w for w in edit.warnings)
    else:
        assert torch.allclose(cov @ vec["c_inv_k"], vec["k_star"], rtol=1e-6, atol=1e-8 * float(vec["k_star"].norm()))
        assert not any("not positive definite" in w for w in edit.warnings)


def test_identity_covariance_option(corpus):
    lm = tiny.lm("gpt2")
    edit = get_method("rome").compute(lm, [REQ], _hp(corpus, mom2_adjustment=False))
    vec = edit.diagnostics["vectors"]
    assert edit.diagnostics["identity_cov"] is True
    assert torch.allclose(vec["c_inv_k"], vec["k_star"])


@pytest.mark.parametrize("family", tiny.FAMILIES)
def test_fast_paths_match_full_forward(family, corpus, monkeypatch):
    """The fast paths (suffix-only replay; replay of blocks l..L-1; the KL term read from the plain prompt's
    row) give the same loss curve as full forwards with a KL row of its own, on every supported family."""
    lm = tiny.lm(family)
    hp = _hp(corpus)
    curves = {}
    for mode, switches in (("suffix", {}), ("blocks", {"suffix_cache": False}),
                           ("full", {"suffix_cache": False, "block_replay": False}),
                           ("kl_row", {"suffix_cache": False, "block_replay": False, "shared_kl_row": False})):
        d = get_method("rome").compute(lm, [REQ], hp, speed=Speed(**switches)).diagnostics
        assert d["suffix_replay"] == (mode == "suffix")
        assert d["block_replay"] == (mode in ("suffix", "blocks"))
        curves[mode] = d["loss_curve"]
    # "kl_row": the KL prompt in a row of its own, as ROME runs it; the others read it from the plain prompt's
    # row, which opens with the same tokens (REQ's prompt starts with the subject).
    for mode in ("suffix", "blocks", "kl_row"):
        assert curves[mode] == pytest.approx(curves["full"], rel=1e-4, abs=1e-6), mode


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_layer_zero_fast_path_matches_full_forward(family, corpus):
    """At layer 0 the suffix replay's own check runs the edited block again on other rows; whichever path the
    default settings take, the keys and the update must be those of the full forward."""
    lm = tiny.lm(family)
    hp = _hp(corpus, layer=0, context_prefixes=0)
    edits = {mode: get_method("rome").compute(lm, [REQ], hp, speed=Speed(**switches))
             for mode, switches in (("suffix", {}), ("full", {"suffix_cache": False, "block_replay": False}))}
    fast, full = edits["suffix"].diagnostics, edits["full"].diagnostics
    assert not full["suffix_replay"]
    assert torch.allclose(fast["vectors"]["key"], full["vectors"]["key"], rtol=1e-4, atol=1e-5)
    (name, d_fast), = edits["suffix"].patch.deltas.items()
    d_full = edits["full"].patch.deltas[name]
    assert torch.allclose(d_fast, d_full, rtol=1e-3, atol=1e-4 * float(d_full.abs().max()))


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_packed_linears_give_the_same_edit(family, corpus, monkeypatch):
    """The replayed blocks' Linear layers computed with oneDNN's blocked weights (kernels.packed_linears): the
    same loss curve and update as the plain layers, and nothing left installed afterwards."""
    from editcore.models import kernels

    lm = tiny.lm(family)
    hp = _hp(corpus)
    runs = {}
    for on in (True, False):
        runs[on] = get_method("rome").compute(lm, [REQ], hp, speed=Speed(packed_linears=on, packed_limit_mb=1e9))
    assert runs[True].diagnostics["loss_curve"] == pytest.approx(runs[False].diagnostics["loss_curve"], rel=1e-4)
    (name, a), = runs[True].patch.deltas.items()
    assert torch.allclose(a, runs[False].patch.deltas[name], rtol=1e-3, atol=1e-6 * float(a.abs().max()))
    assert not any("_packed" in m.__dict__ for m in lm.model.modules())
    assert any(kernels.is_packed(m) for m in lm.adapter.block(hp.layer).modules())  # it did run packed


def test_a_cached_forward_that_differs_from_a_plain_one_turns_the_suffix_replay_off(corpus, monkeypatch):
    """The suffix replay trusts the key/value cache only after comparing it with a plain forward; a family
    whose cached forward differed would get the whole-sequence replay, with the same loss curve."""
    from editcore.methods import replay

    lm = tiny.lm("llama")
    reference = get_method("rome").compute(lm, [REQ], _hp(corpus)).diagnostics
    real = replay.cached_forward

    def skewed(lm_, ids, mask, positions, cache=None):
        out, cache = real(lm_, ids, mask, positions, cache)
        out.last_hidden_state = out.last_hidden_state + 0.5
        return out, cache

    monkeypatch.setattr(replay, "cached_forward", skewed)
    d = get_method("rome").compute(lm, [REQ], _hp(corpus)).diagnostics
    assert reference["suffix_replay"] and not d["suffix_replay"] and d["block_replay"]
    assert d["loss_curve"] == pytest.approx(reference["loss_curve"], rel=1e-4, abs=1e-6)


def test_a_suffix_replay_that_differs_from_the_recorded_forward_is_dropped(corpus, monkeypatch):
    """The first step is the suffix's recording pass through the model itself; the replay that runs the later
    steps is compared with it (unedited) before it is trusted. A replay that differed is replaced by the
    whole-sequence one, with the same loss curve."""
    from editcore.methods import replay

    lm = tiny.lm("llama")
    reference = get_method("rome").compute(lm, [REQ], _hp(corpus)).diagnostics
    real = replay.run_recorded

    def skewed(rp, edit, module):
        out = real(rp, edit, module)
        return out + 0.5 if isinstance(rp, replay.SuffixReplay) else out

    monkeypatch.setattr(replay, "run_recorded", skewed)
    d = get_method("rome").compute(lm, [REQ], _hp(corpus)).diagnostics
    assert reference["suffix_replay"] and not d["suffix_replay"] and d["block_replay"]
    assert d["loss_curve"] == pytest.approx(reference["loss_curve"], rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("family", tiny.FAMILIES)
def test_keys_read_in_the_recording_pass_equal_fresh_ones(family, corpus, monkeypatch):
    """ROME's k* comes from the suffix replay's recording pass (the projection's input at the subject's last
    token, with the prefix from the cache): the same as a plain forward's keys averaged over the contexts."""
    from editcore.methods import common

    lm = tiny.lm(family)
    hp = _hp(corpus)
    d = get_method("rome").compute(lm, [REQ], hp).diagnostics
    assert d["suffix_replay"]
    templates = common.context_templates(lm, hp.context_prefixes, hp.context_tokens, hp.context_seed)
    fresh = common.mlp_keys(lm, d["layer"], [REQ], templates)[0].double()
    assert torch.allclose(d["vectors"]["k_star"], fresh, rtol=1e-4, atol=1e-5 * float(fresh.abs().max()))


def test_context_prefix_key_values_are_reused_only_for_the_same_weights(corpus, monkeypatch):
    """The context prefixes' key/values are computed once and kept for the next edit while the weights are the
    same (a scope that restored them counts as the same); with a patch applied they are computed afresh, and
    the loss curve equals the one computed without the shared prefixes."""
    from editcore.methods import replay
    from editcore.scope import Patch

    lm = tiny.lm("llama")
    hp = _hp(corpus)
    rome = get_method("rome")
    first = rome.compute(lm, [REQ], hp).diagnostics
    entry = replay._SEGMENTS[lm.model]
    assert len(entry[0][1]) == hp.context_prefixes  # one segment per context prefix (no BOS here)
    assert rome.compute(lm, [REQ], hp).diagnostics["loss_curve"] == first["loss_curve"]
    assert replay._SEGMENTS[lm.model] is entry  # reused, not recomputed
    name = "model.embed_tokens.weight"
    with lm.scope() as scope:
        scope.apply(Patch({name: 0.05 * torch.randn_like(dict(lm.model.named_parameters())[name])}))
        patched = rome.compute(lm, [REQ], hp).diagnostics
        assert replay.segment_key(lm) != entry[0]
        unshared = rome.compute(lm, [REQ], hp, speed=Speed(shared_prefixes=False)).diagnostics
    assert patched["suffix_replay"] and patched["loss_curve"] != pytest.approx(first["loss_curve"], rel=1e-3)
    assert patched["loss_curve"] == pytest.approx(unshared["loss_curve"], rel=1e-4, abs=1e-6)
    rome.compute(lm, [REQ], hp)
    assert replay.segment_key(lm) == entry[0]  # the restored model has its old key back


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_suffix_replay_with_subject_at_the_start(family, corpus, monkeypatch):
    """A one-token subject opening the prompt (no BOS) leaves rows with nothing before the edited token; the
    suffix replay pads them and still matches full forwards (it used to give up on the whole batch)."""
    from editcore.methods import common

    lm = tiny.lm(family)
    req = Request("{} is located in the city of", "The", "London")
    assert common.subject_last_index(lm.tokenizer, req.prompt, req.subject)[1] == 0
    curves = {}
    for mode, switches in (("suffix", {}), ("full", {"suffix_cache": False, "block_replay": False})):
        d = get_method("rome").compute(lm, [req], _hp(corpus), speed=Speed(**switches)).diagnostics
        assert d["suffix_replay"] == (mode == "suffix")
        curves[mode] = d["loss_curve"]
    assert curves["suffix"] == pytest.approx(curves["full"], rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("bad, message", [
    (Request("{} is located in", "Big Ben", "London"), None),  # valid: control
    (Request("The Louvre is located in", "The Louvre", "London"), "subject"),
    (Request("{} is located in", "The Louvre", ""), "target"),
    (Request("{} is located in", "The Louvre", "   "), "target"),
    (Request("{} is located in", "", "London"), "subject"),
])
def test_bad_requests_raise_input_error(bad, message, corpus):
    lm = tiny.lm("gpt2")
    before = param_digest(lm.model)
    if message is None:
        get_method("rome").compute(lm, [bad], _hp(corpus, v_num_grad_steps=1))
    else:
        with pytest.raises(InputError, match=message):
            get_method("rome").compute(lm, [bad], _hp(corpus))
    assert param_digest(lm.model) == before


@pytest.mark.parametrize("override, message", [
    ({"layer": 99}, "out of range"),
    ({"v_lr": math.nan}, "finite"),
    ({"kl_factor": math.inf}, "finite"),
    ({"no_such_key": 1}, "unknown hyper-parameter"),
    ({"v_num_grad_steps": 0}, ">= 1"),
])
def test_bad_hparams_raise_input_error(override, message, corpus):
    lm = tiny.lm("gpt2")
    before = param_digest(lm.model)
    with pytest.raises(InputError, match=message):
        get_method("rome").compute(lm, [REQ], _hp(corpus, **override))
    assert param_digest(lm.model) == before


def test_one_request_only(corpus):
    lm = tiny.lm("gpt2")
    with pytest.raises(InputError, match="one fact"):
        get_method("rome").compute(lm, [REQ, REQ], _hp(corpus))


# ---- the real model -----------------------------------------------------------------------------------
KNOWN_FACTS = [
    ("{} is located in the city of", "The Louvre", "London"),
    ("{} is located in the city of", "The Eiffel Tower", "Berlin"),
    ("{} is located in the city of", "The Colosseum", "Paris"),
    ("{} is located in the city of", "Big Ben", "Rome"),
    ("The capital of {} is", "Japan", "Madrid"),
    ("{} was developed by", "Microsoft Windows", "Apple"),
    ("{} is located in the country of", "The Statue of Liberty", "Canada"),
    ("The mother tongue of {} is", "Vladimir Putin", "French"),
    ("{} plays the sport of", "Lionel Messi", "basketball"),
    ("The currency of {} is the", "Japan", "euro"),
]


def real_requests():
    return [Request(p, s, t) for p, s, t in KNOWN_FACTS]


def top1_is_target(lm, req) -> bool:
    from editcore.text import score_targets

    return bool(score_targets(lm, [req.text], [req.target_new])[0].token_correct[0])


@pytest.mark.integration
def test_rome_on_gemma_edits_known_facts(gemma, monkeypatch):
    monkeypatch.delenv("EDITSCOPE_HOME", raising=False)  # use the real cache (statistics, prefixes)
    from editcore.paths import shared_data

    corpus = shared_data() / "wikitext" / "wiki.test.raw"
    overrides = {"stats_samples": 8192, "stats_corpus": str(corpus)} if corpus.is_file() else {"stats_samples": 0}
    method = get_method("rome")
    hp = load_hparams("rome", method.Hparams, "gemma-3-270m", overrides)
    before = gemma.digest()
    hits = 0
    for req in real_requests():
        with gemma.scope() as s:
            edit = method.compute(gemma, [req], hp)
            s.apply(edit.patch)
            hits += top1_is_target(gemma, req)
    assert gemma.digest() == before
    assert hits >= 9, f"ROME made only {hits}/10 new targets top-1"
