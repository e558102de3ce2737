"""EMMET on tiny random models: one request is r-ROME, a batch meets its equality constraints, several layers
reach z*; the real Gemma run is marked integration."""

import pytest
import torch

import tiny
from editcore.methods import get_method
from editcore.methods.base import load_hparams
from editcore.methods.batch_update import projection_of
from editcore.scope import param_digest
from editcore.types import Request

REQ = Request("{} is located in the city of", "The Louvre", "London")
REQS = [REQ, Request("The capital of {} is", "Japan", "Paris"), Request("{} plays the", "Miles Davis", "guitar")]

pytestmark = pytest.mark.usefixtures("tmp_home")

_VALUE = {"stats_samples": 1500, "v_num_grad_steps": 5, "context_prefixes": 2, "context_tokens": 3}


def _hp(method, corpus, **kw):
    return load_hparams(method, get_method(method).Hparams, None, {**_VALUE, "stats_corpus": corpus, **kw})


@pytest.mark.parametrize("family", ["gpt2", "gptj", "llama", "gemma3"])
def test_one_request_is_r_rome(family, corpus):
    """With one request EMMET's closed form is r-ROME's rank-one update (ROME with consistent_keys: the
    averaged key k* in the constraint and in the update): the same value v*, key and update to tolerance."""
    lm = tiny.lm(family)
    rome = get_method("rome").compute(lm, [REQ], _hp("rome", corpus, layer=1, consistent_keys=True))
    emmet = get_method("emmet").compute(lm, [REQ], _hp("emmet", corpus, layers=[1]))
    (name, d_rome), = rome.patch.deltas.items()
    assert list(emmet.patch.deltas) == [name]
    d_emmet = emmet.patch.deltas[name].double()
    assert torch.allclose(d_emmet, d_rome.double(), rtol=1e-4, atol=1e-5 * float(d_rome.abs().max()))
    assert emmet.diagnostics["loss_curves"][0] == pytest.approx(rome.diagnostics["loss_curve"], rel=1e-6)
    assert torch.allclose(emmet.diagnostics["vectors"]["keys"][:, 0].double(), rome.diagnostics["vectors"]["k_star"],
                          atol=1e-5)
    # ...and not the ROME of the reference code, whose update uses the plain prompt's key (the test can fail).
    plain = get_method("rome").compute(lm, [REQ], _hp("rome", corpus, layer=1))
    assert not torch.allclose(d_emmet, plain.patch.deltas[name].double(), rtol=1e-3, atol=1e-4 * float(d_rome.abs().max()))


@pytest.mark.parametrize("family", ["gpt2", "gemma3"])
def test_batch_meets_its_equality_constraints(family, corpus):
    """Every edited key gives exactly its value after the edit (emmet_lambda 0), while MEMIT's least-squares
    update on the same layer only approaches them; with emmet_lambda > 0 the constraints are near but not met."""
    lm = tiny.lm(family)
    before = param_digest(lm.model)
    edit = get_method("emmet").compute(lm, REQS, _hp("emmet", corpus, layers=[1], emmet_lambda=0.0))
    assert param_digest(lm.model) == before
    keys, targets = edit.diagnostics["vectors"]["keys"].double(), edit.diagnostics["vectors"]["targets"].double()
    assert keys.shape[1] == len(REQS) and torch.linalg.matrix_rank(edit.patch.deltas[
        lm.adapter.mlp_out_param_name(1)].double(), rtol=1e-6) == len(REQS)
    with lm.scope(edit.patch):
        got = projection_of(lm, 1, keys)
    scale = float((targets - projection_of(lm, 1, keys)).norm())
    assert float((got - targets).norm()) < 1e-4 * scale
    ridge = get_method("emmet").compute(lm, REQS, _hp("emmet", corpus, layers=[1], emmet_lambda=1e3))
    with lm.scope(ridge.patch):
        off = float((projection_of(lm, 1, keys) - targets).norm())
    assert 1e-3 * scale < off < scale


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_several_layers_reach_z_star(family, corpus):
    """Several layers: MEMIT's z* at the last block, each layer's share written exactly; on pre-norm families,
    with no context prefixes (the averaged key is the plain prompt's), the last block's output reaches z*."""
    lm = tiny.lm(family)
    edit = get_method("emmet").compute(lm, REQS[:2], _hp("emmet", corpus, layers=[0, 1], emmet_lambda=0.0,
                                                         context_prefixes=0))
    assert set(edit.patch.deltas) == {lm.adapter.mlp_out_param_name(i) for i in (0, 1)}
    assert edit.diagnostics["layers"] == [0, 1]
    assert edit.diagnostics["z_residual_left"] < 1e-3


def test_default_layer_is_romes(corpus):
    lm = tiny.lm("llama", n_layers=6)
    from editcore.methods.rome import auto_layer

    edit = get_method("emmet").compute(lm, [REQ], _hp("emmet", corpus))
    assert edit.diagnostics["layers"] == [auto_layer(lm)]


def batch_hits_on_gemma(gemma, monkeypatch, name: str) -> int:
    """How many of the 10 known facts of test_rome one batch of method ``name`` (its Gemma hyper-parameters,
    the real statistics cache) makes top-1 on the real default model; the model is checked restored."""
    from test_rome import real_requests, top1_is_target

    from editcore.paths import shared_data

    monkeypatch.delenv("EDITSCOPE_HOME", raising=False)
    corpus = shared_data() / "wikitext" / "wiki.test.raw"
    overrides = {"stats_corpus": str(corpus)} if corpus.is_file() else {"stats_samples": 4096, "stats_corpus": "model"}
    method = get_method(name)
    hp = load_hparams(name, method.Hparams, "gemma-3-270m", overrides)
    before = gemma.digest()
    reqs = real_requests()
    with gemma.scope() as s:
        s.apply(method.compute(gemma, reqs, hp).patch)
        hits = sum(top1_is_target(gemma, r) for r in reqs)
    assert gemma.digest() == before
    return hits


@pytest.mark.integration
def test_emmet_on_gemma_edits_known_facts(gemma, monkeypatch):
    hits = batch_hits_on_gemma(gemma, monkeypatch, "emmet")
    assert hits >= 8, f"EMMET made only {hits}/10 new targets top-1"
