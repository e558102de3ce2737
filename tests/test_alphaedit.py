"""AlphaEdit on tiny random models: the projection annihilates the preserved keys' principal directions, the
update leaves ordinary keys' outputs in place as the threshold promises, earlier edits' keys are read from the
scope's patches; the real Gemma run is marked integration."""

import pytest
import torch

import tiny
from editcore.errors import InputError
from editcore.methods import get_method, layer_stats
from editcore.methods.alphaedit import MEMORY, null_space, null_space_update, previous_keys
from editcore.methods.base import load_hparams
from editcore.scope import applied_patches, param_digest
from editcore.types import Request

REQ = Request("{} is located in the city of", "The Louvre", "London")
REQ2 = Request("The capital of {} is", "Japan", "Paris")
REQ3 = Request("{} plays the", "Miles Davis", "guitar")

pytestmark = pytest.mark.usefixtures("tmp_home")


def _threshold(lm, layer, corpus, q=0.5):
    """An eigenvalue quantile of the tiny model's statistics: its keys are far smaller than a real model's, so
    the paper's 2e-2 would put every direction in the null space."""
    ev = torch.linalg.eigvalsh(layer_stats.second_moment(lm, layer, 1500, corpus).double())
    return float(ev[int(q * len(ev))])


def _hp(corpus, **kw):
    base = {"layers": [0, 1], "stats_samples": 1500, "stats_corpus": corpus, "v_num_grad_steps": 5,
            "context_prefixes": 2, "context_tokens": 3, "l2": 1e-6}
    return load_hparams("alphaedit", get_method("alphaedit").Hparams, None, {**base, **kw})


def _weight(lm, edit, layer):
    d = edit.patch.deltas[lm.adapter.mlp_out_param_name(layer)].double()
    return d.T if lm.adapter.mlp_out_is_conv1d else d  # [d_model, d_mlp]


@pytest.mark.parametrize("family", ["gpt2", "llama", "gemma3"])
def test_update_is_orthogonal_to_the_preserved_keys(family, corpus):
    """P = U U^T annihilates the principal directions of C (eigenvalues >= threshold), the update has no
    component along them, and over the statistics' own keys E||dW k||^2 <= threshold * ||dW||_F^2; MEMIT's
    update on the same facts breaks that bound by far (so the check can fail)."""
    lm = tiny.lm(family)
    thr = _threshold(lm, 1, corpus)
    cov = layer_stats.second_moment(lm, 1, 1500, corpus).double()
    ev, vecs = torch.linalg.eigh(cov)
    principal = vecs[:, ev >= thr]
    u = null_space(lm, [1], 1500, corpus, thr)[1]
    assert 0 < u.shape[1] < cov.shape[0]
    p = u @ u.T
    assert float((p @ principal).norm()) < 1e-8 * float(principal.norm())
    assert torch.allclose(p @ p, p, atol=1e-10)

    before = param_digest(lm.model)
    edit = get_method("alphaedit").compute(lm, [REQ, REQ2], _hp(corpus, layers=[1], nullspace_threshold=thr))
    assert param_digest(lm.model) == before
    dw = _weight(lm, edit, 1)
    assert float(dw.norm()) > 0
    assert float((dw @ principal).norm()) < 1e-5 * float(dw.norm())
    assert float(torch.trace(dw @ cov @ dw.T)) <= thr * float(dw.norm()) ** 2 * (1 + 1e-6)
    memit = get_method("memit").compute(lm, [REQ, REQ2], load_hparams("memit", get_method("memit").Hparams, None, {
        "layers": [1], "stats_samples": 1500, "stats_corpus": corpus, "v_num_grad_steps": 5, "context_prefixes": 2,
        "context_tokens": 3}))
    mw = _weight(lm, memit, 1)
    assert float((mw @ principal).norm()) > 0.1 * float(mw.norm())


def test_null_space_update_is_the_papers_formula():
    """The solve in the null space's basis equals R K^T P (K_p K_p^T P + K K^T P + alpha I)^-1."""
    g = torch.Generator().manual_seed(0)
    d, r_dim, n, n_prev, alpha = 16, 9, 3, 4, 0.7
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    u = q[:, :r_dim]
    p = u @ u.T
    k = torch.randn(d, n, generator=g, dtype=torch.float64)
    kp = torch.randn(d, n_prev, generator=g, dtype=torch.float64)
    res = torch.randn(5, n, generator=g, dtype=torch.float64)
    paper = res @ k.T @ p @ torch.linalg.inv(kp @ kp.T @ p + k @ k.T @ p + alpha * torch.eye(d, dtype=torch.float64))
    assert torch.allclose(null_space_update(res, k, u, kp, alpha), paper, atol=1e-10)
    paper0 = res @ k.T @ p @ torch.linalg.inv(k @ k.T @ p + alpha * torch.eye(d, dtype=torch.float64))
    assert torch.allclose(null_space_update(res, k, u, None, alpha), paper0, atol=1e-10)


def test_the_eigen_decomposition_is_cached(corpus):
    lm = tiny.lm("llama")
    first = null_space(lm, [1], 1500, corpus, 1e-5)[1]
    key = {**layer_stats.cache_key(lm, 1, layer_stats.resolve_corpus(corpus), 1500), "stat": "mom2_eigh"}
    assert layer_stats.cache_path(key).is_file()
    assert torch.equal(null_space(lm, [1], 1500, corpus, 1e-5)[1], first)
    assert null_space(lm, [1], 1500, corpus, 1.0)[1].shape[1] == lm.adapter.d_mlp  # every direction


def test_sequential_edits_preserve_the_earlier_edits_keys(corpus):
    """Inside one scope, a second AlphaEdit edit reads the first one's keys from its patch (Patch.memory) and
    leaves their outputs nearly in place; without them (accumulate off) it moves them far more. Rolled back,
    the first edit no longer counts."""
    lm = tiny.lm("llama")
    thr = _threshold(lm, 1, corpus, q=0.75)
    method = get_method("alphaedit")
    hp = _hp(corpus, nullspace_threshold=thr)
    assert applied_patches(lm.model) == []
    first = method.compute(lm, [REQ, REQ3], hp)
    assert first.diagnostics["previous_keys"] == 0
    with lm.scope() as scope:
        scope.apply(first.patch)
        assert applied_patches(lm.model)[-1] is first.patch
        kept = first.patch.memory[MEMORY][0]
        assert set(kept) == {lm.adapter.mlp_out_param_name(i) for i in (0, 1)}
        assert previous_keys(lm, list(kept))[lm.adapter.mlp_out_param_name(1)].shape[1] == 2
        second = method.compute(lm, [REQ2], hp)
        alone = method.compute(lm, [REQ2], _hp(corpus, nullspace_threshold=thr, accumulate=False))
        assert second.diagnostics["previous_keys"] == 2 and alone.diagnostics["previous_keys"] == 0
        for layer in (0, 1):
            k1 = kept[lm.adapter.mlp_out_param_name(layer)].double()
            moved = float((_weight(lm, second, layer) @ k1).norm())
            moved_alone = float((_weight(lm, alone, layer) @ k1).norm())
            assert moved < 0.1 * moved_alone, layer
        scope.rollback()
        assert method.compute(lm, [REQ2], hp).diagnostics["previous_keys"] == 0
    assert applied_patches(lm.model) == []


def test_an_other_methods_patch_is_not_read(corpus):
    lm = tiny.lm("gpt2")
    memit = get_method("memit").compute(lm, [REQ], load_hparams("memit", get_method("memit").Hparams, None, {
        "layers": [0, 1], "stats_samples": 1500, "stats_corpus": corpus, "v_num_grad_steps": 2}))
    with lm.scope(memit.patch):
        edit = get_method("alphaedit").compute(lm, [REQ2], _hp(corpus, nullspace_threshold=1e-4))
    assert edit.diagnostics["previous_keys"] == 0


@pytest.mark.parametrize("override", [{"stats_samples": 0}, {"mom2_adjustment": False}])
def test_without_statistics_it_refuses(override, corpus):
    lm = tiny.lm("gpt2")
    before = param_digest(lm.model)
    with pytest.raises(InputError, match="needs layer statistics"):
        get_method("alphaedit").compute(lm, [REQ], _hp(corpus, **override))
    assert param_digest(lm.model) == before


def test_a_threshold_below_every_eigenvalue_is_warned(corpus):
    lm = tiny.lm("gpt2")
    edit = get_method("alphaedit").compute(lm, [REQ], _hp(corpus, nullspace_threshold=0.0))
    assert any("cannot change" in w for w in edit.warnings)
    assert all(float(d.abs().max()) == 0 for d in edit.patch.deltas.values())


@pytest.mark.integration
def test_alphaedit_on_gemma_edits_known_facts(gemma, monkeypatch):
    from test_emmet import batch_hits_on_gemma

    hits = batch_hits_on_gemma(gemma, monkeypatch, "alphaedit")
    assert hits >= 8, f"AlphaEdit made only {hits}/10 new targets top-1"


def test_the_sequential_run_accumulates_alphaedits_keys(tmp_path, monkeypatch):
    """The Sequential page's run (editcore.service.sequential) with MEMIT and AlphaEdit side by side: both runs
    complete and restore the model, and each AlphaEdit edit sees the keys of the ones applied before it in the
    run, and none of MEMIT's."""
    from editcore import service
    from editcore.methods.alphaedit import AlphaEdit

    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(tiny.CORPUS * 30))
    lm = tiny.lm("gpt2")
    seen = []
    real = AlphaEdit.compute

    def spy(self, *args, **kwargs):
        edit = real(self, *args, **kwargs)
        seen.append(edit.diagnostics["previous_keys"])
        return edit

    monkeypatch.setattr(AlphaEdit, "compute", spy)
    tiny_hp = {"layers": [1, 2], "stats_samples": 1500, "stats_corpus": str(corpus), "v_num_grad_steps": 3}
    cfg = service.sequential_config(["memit", "alphaedit"], 3, "catalog", seed=1, every=1,
                                    overrides={"memit": tiny_hp, "alphaedit": {**tiny_hp, "nullspace_threshold": 1e-4}})
    before = lm.digest()
    out = service.sequential_run(lm, cfg, use_cache=False)
    assert lm.digest() == before
    assert seen == [0, 1, 2]
    for name in ("memit", "alphaedit"):
        run = out["runs"][name]
        assert run["complete"] and [p["n_edits"] for p in run["points"]] == [0, 1, 2, 3]
        assert all(p["weight_drift"] > 0 for p in run["points"][1:])
