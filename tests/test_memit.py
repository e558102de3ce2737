"""MEMIT: closed form for one request, restoring, input checks; the real Gemma run is marked integration."""

import math

import pytest
import torch

import tiny
from editcore.errors import InputError
from editcore.methods import get_method
from editcore.methods.base import load_hparams
from editcore.methods.speed import Speed
from editcore.methods.batch_update import memit_update
from editcore.scope import param_digest
from editcore.types import Request

REQ = Request("{} is located in the city of", "The Louvre", "London")
REQ2 = Request("The capital of {} is", "Japan", "Paris")


# Caches (context prefixes, statistics) go to a temporary home: no test sees another's files.
pytestmark = pytest.mark.usefixtures("tmp_home")


def _hp(corpus, **kw):
    base = {"layers": [0, 1], "stats_samples": 1500, "stats_corpus": corpus, "v_num_grad_steps": 5,
            "context_prefixes": 2, "context_tokens": 3, "mom2_update_weight": 10.0}
    base.update(kw)
    return load_hparams("memit", get_method("memit").Hparams, None, base)


def test_memit_update_matches_sherman_morrison():
    """One key: R k^T (lam C + k k^T)^-1 = R (C^-1 k)^T / (lam + k^T C^-1 k)."""
    g = torch.Generator().manual_seed(0)
    d_mlp, d_model, lam = 12, 5, 3.0
    a = torch.randn(d_mlp, 40, generator=g, dtype=torch.float64)
    cov = a @ a.T / 40
    k = torch.randn(d_mlp, 1, generator=g, dtype=torch.float64)
    r = torch.randn(d_model, 1, generator=g, dtype=torch.float64)
    c_inv_k = torch.linalg.solve(cov, k)
    expect = r @ c_inv_k.T / (lam + (k.T @ c_inv_k))
    assert torch.allclose(memit_update(r, k, cov, lam), expect, atol=1e-10)
    # Identity covariance when no statistics are used.
    assert torch.allclose(memit_update(r, k, None, lam), r @ k.T / (lam + k.T @ k), atol=1e-10)
    # From C's Cholesky factor (the Woodbury form) the same.
    assert torch.allclose(memit_update(r, k, None, lam, torch.linalg.cholesky(cov)), expect, atol=1e-10)


@pytest.mark.parametrize("n", [1, 7, 12, 20])
def test_memit_update_from_the_cholesky_factor_matches_the_direct_solve(n):
    """The Woodbury form (fewer edits than key dimensions) and the direct solve give one matrix; with as
    many edits as dimensions or more the factor is multiplied out and solved directly."""
    g = torch.Generator().manual_seed(n)
    d_mlp, d_model, lam = 12, 5, 50.0
    a = torch.randn(d_mlp, 40, generator=g, dtype=torch.float64)
    cov = a @ a.T / 40
    k = torch.randn(d_mlp, n, generator=g, dtype=torch.float64)
    r = torch.randn(d_model, n, generator=g, dtype=torch.float64)
    direct = memit_update(r, k, cov, lam)
    assert torch.allclose(direct, r @ k.T @ torch.linalg.inv(lam * cov + k @ k.T), atol=1e-9)
    assert torch.allclose(memit_update(r, k, None, lam, torch.linalg.cholesky(cov)), direct, atol=1e-9)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_single_request_single_layer_closed_form(family, corpus):
    """With one request and one layer, the method's delta is the closed form on its own key and residual,
    and (pre-norm residual families, no context prefixes, small lambda) the edited hidden state reaches z*."""
    from editcore.methods.common import mlp_keys, module_io_at, subject_last_index

    lm = tiny.lm(family)
    before = param_digest(lm.model)
    hp = _hp(corpus, layers=[1], context_prefixes=0, mom2_update_weight=1e-3)
    edit = get_method("memit").compute(lm, [REQ], hp)
    assert param_digest(lm.model) == before
    from editcore.methods import layer_stats as stats

    cov = stats.second_moment(lm, 1, 1500, corpus)
    k = mlp_keys(lm, 1, [REQ], ["{}"]).double().T
    ids, idx = subject_last_index(lm.tokenizer, REQ.prompt, REQ.subject)
    z_cur = module_io_at(lm, "block", 1, [ids], [idx], "out").double().T
    (name, delta), = edit.patch.deltas.items()
    weight_delta = delta.double().T if lm.adapter.mlp_out_is_conv1d else delta.double()
    # Recover z* from the update: R = dW (lam C + k k^T) k / |k|^2 ... simpler: check dW k direction and size.
    c_inv_k = torch.linalg.solve(cov, k)
    scale = float((k.T @ c_inv_k) / (1e-3 + k.T @ c_inv_k))
    r_implied = weight_delta @ k
    # dW k = R * k^T C^-1 k / (lam + k^T C^-1 k) and dW is R (C^-1 k)^T / (lam + ...): rank one along C^-1 k.
    assert torch.linalg.matrix_rank(weight_delta, rtol=1e-5).item() == 1
    expect = (r_implied / scale) @ c_inv_k.T / (1e-3 + k.T @ c_inv_k)
    assert torch.allclose(weight_delta, expect, rtol=1e-5, atol=1e-8 * float(weight_delta.abs().max()))
    with lm.scope(edit.patch):
        z_new = module_io_at(lm, "block", 1, [ids], [idx], "out").double().T
    assert edit.diagnostics["z_residual_left"] < 1e-3
    assert torch.allclose(z_new - z_cur, r_implied / scale, rtol=1e-3, atol=1e-5)


def test_batch_restores_model_and_touches_each_layer(corpus):
    lm = tiny.lm("gemma3")
    before = param_digest(lm.model)
    edit = get_method("memit").compute(lm, [REQ, REQ2], _hp(corpus))
    assert param_digest(lm.model) == before
    assert set(edit.patch.deltas) == {lm.adapter.mlp_out_param_name(i) for i in (0, 1)}
    assert len(edit.requests) == 2 and get_method("memit").batched
    with lm.scope(edit.patch):
        assert param_digest(lm.model) != before
    assert param_digest(lm.model) == before


@pytest.mark.parametrize("override, message", [
    ({"layers": [0, 99]}, "out of range"),
    ({"mom2_update_weight": math.nan}, "finite"),
    ({"bogus": 1}, "unknown hyper-parameter"),
])
def test_bad_hparams(override, message, corpus):
    lm = tiny.lm("gpt2")
    before = param_digest(lm.model)
    with pytest.raises(InputError, match=message):
        get_method("memit").compute(lm, [REQ], _hp(corpus, **override))
    assert param_digest(lm.model) == before


def test_bad_request_in_batch_edits_nothing(corpus):
    lm = tiny.lm("gpt2")
    before = param_digest(lm.model)
    with pytest.raises(InputError, match="subject"):
        get_method("memit").compute(lm, [REQ, Request("Paris is nice", "Rome", "x")], _hp(corpus))
    assert param_digest(lm.model) == before


@pytest.mark.integration
def test_memit_on_gemma_edits_known_facts(gemma, monkeypatch):
    """One batch of 10 known facts on the post-norm Gemma (the case that needs the norm mapping)."""
    from test_rome import real_requests, top1_is_target

    from editcore.paths import shared_data

    monkeypatch.delenv("EDITSCOPE_HOME", raising=False)
    corpus = shared_data() / "wikitext" / "wiki.test.raw"
    # Without the WikiText sample, the offline default: text sampled from the model (MEMIT needs real
    # statistics on Gemma: with the identity instead of C it made 0/10 in a fresh clone; 4096 sampled tokens: 10/10).
    overrides = {"stats_samples": 8192, "stats_corpus": str(corpus)} if corpus.is_file() else \
        {"stats_samples": 4096, "stats_corpus": "model"}
    method = get_method("memit")
    hp = load_hparams("memit", method.Hparams, "gemma-3-270m", overrides)
    before = gemma.digest()
    reqs = real_requests()
    with gemma.scope() as s:
        edit = method.compute(gemma, reqs, hp)
        s.apply(edit.patch)
        hits = sum(top1_is_target(gemma, r) for r in reqs)
    assert gemma.digest() == before
    assert hits >= 9, f"MEMIT made only {hits}/10 new targets top-1"


def _rms_norm(d: int, gain: torch.Tensor):
    norm = torch.nn.RMSNorm(d, eps=1e-6, dtype=torch.float64)
    with torch.no_grad():
        norm.weight.copy_(gain)
    return norm


def test_through_post_norm_reaches_a_reachable_target():
    """If the wanted output is itself a norm output, the returned change hits it exactly and keeps rms(m)."""
    from editcore.methods.batch_update import through_post_norm

    g = torch.Generator().manual_seed(1)
    d = 16
    gain = torch.rand(d, generator=g, dtype=torch.float64) * 3 + 0.1
    norm = _rms_norm(d, gain)
    m = torch.randn(3, d, generator=g, dtype=torch.float64) * 5
    m_goal = torch.randn(3, d, generator=g, dtype=torch.float64)
    with torch.no_grad():
        r = norm(m_goal) - norm(m)
        change = through_post_norm(norm, m, r)
        got = norm(m + change)
    assert torch.allclose(got, norm(m) + r, atol=1e-6)
    assert torch.allclose((m + change).pow(2).mean(1), m.pow(2).mean(1), rtol=1e-6)


def test_through_post_norm_zero_gain_and_unreachable_target():
    """A coordinate with gain 0 cannot move and is left alone; an unreachable target gets the closest output
    (closer than not moving at all), with no NaN."""
    from editcore.methods.batch_update import through_post_norm

    g = torch.Generator().manual_seed(2)
    d = 10
    gain = torch.linspace(0.0, 2.0, d, dtype=torch.float64)
    norm = _rms_norm(d, gain)
    m = torch.randn(2, d, generator=g, dtype=torch.float64)
    r = torch.randn(2, d, generator=g, dtype=torch.float64) * 10
    with torch.no_grad():
        change = through_post_norm(norm, m, r)
        want = norm(m) + r
        got = norm(m + change)
    assert torch.isfinite(change).all()
    assert torch.all(change[:, 0] == 0)
    assert torch.all((got - want).norm(dim=1) < (norm(m) - want).norm(dim=1))


def test_through_post_norm_rejects_other_norms():
    from editcore.methods.batch_update import through_post_norm

    ln = torch.nn.LayerNorm(6, dtype=torch.float64)
    with torch.no_grad():
        ln.bias.fill_(0.5)
    with pytest.raises(InputError, match="not an RMSNorm"):
        through_post_norm(ln, torch.randn(2, 6, dtype=torch.float64), torch.zeros(2, 6, dtype=torch.float64))


@pytest.mark.parametrize("family", tiny.FAMILIES)
def test_dropping_finished_rows_keeps_the_loss_curves(family, monkeypatch):
    """Once requests meet their stopping rule their rows leave the batch; the requests still running follow
    exactly the curves they follow with every row kept (every family, incl. Gemma's sliding-window cache),
    and the same as with full forwards (MEMIT's delta added to the input of the block above the edited one)."""
    from editcore.methods.values import ValueSettings, optimise_values

    lm = tiny.lm(family)
    reqs = [REQ, REQ2, Request("{} plays the", "Miles Davis", "guitar"), Request("{} was born in", "Anna", "Rome")]
    templates = ["{}", "A b. {}", "C d e. {}"]
    first = optimise_values(lm, reqs, 1, templates, ValueSettings(steps=1), slot="block")
    # Half of the requests start below the stopping loss and finish at the first step.
    stop = sorted(r.losses[0] for r in first)[1:3]
    s = ValueSettings(steps=8, lr=2.0, stop_prob=1.0, stop_loss=sum(stop) / 2, clamp_norm_factor=100.0,
                      weight_decay=0.0)
    runs = {}
    for mode, switches in ((True, {}), (False, {"drop_finished": False}),
                           ("kl_rows", {"drop_finished": False, "shared_kl_row": False}),
                           ("full", {"suffix_cache": False, "block_replay": False, "shared_kl_row": False})):
        runs[mode] = optimise_values(lm, reqs, 1, templates, s, slot="block", speed=Speed(**switches))
    # 4 requests x 3 contexts; only REQ2's prompt does not open with its subject, so only it needs a row for
    # the KL prompt "{subject} is a" (the others read it from their plain prompt's row). Then the unfinished half.
    rows = runs[True][0].batch_rows
    unfinished = [q for q, r in enumerate(runs[True]) if r.steps > 1]
    assert len(unfinished) == 2
    assert rows[0] == 13 and rows[1] == sum(3 + (q == 1) for q in unfinished)
    assert rows == sorted(rows, reverse=True)
    assert set(runs[False][0].batch_rows) == {13}
    assert set(runs["kl_rows"][0].batch_rows) == {16}
    assert runs[True][0].suffix and not runs["full"][0].replayed
    # Against full forwards float rounding differs (other shapes), and lr=2 Adam steps carry it along.
    for other, tol in ((False, 1e-5), ("kl_rows", 1e-5), ("full", 1e-3)):
        for a, b in zip(runs[True], runs[other]):
            assert a.steps == b.steps
            assert a.losses == pytest.approx(b.losses, rel=tol, abs=1e-6)
            assert torch.allclose(a.delta, b.delta, atol=tol)
            assert torch.allclose(a.v_init, b.v_init, atol=1e-5)


@pytest.mark.parametrize("family", tiny.FAMILIES)
def test_layer_walk_gives_the_updates_of_fresh_forwards(family, corpus, monkeypatch):
    """MEMIT reads keys, m and z layer by layer from kept block inputs (each layer re-runs only the block below
    it) instead of a fresh forward per layer: the same updates on every family, over three layers."""
    lm = tiny.lm(family)
    reqs = [REQ, REQ2, Request("{} plays the", "Miles Davis", "guitar")]
    hp = _hp(corpus, layers=[0, 1, 2])
    edits = {}
    for walk in (True, False):
        edits[walk] = get_method("memit").compute(lm, reqs, hp, speed=Speed(layer_walk=walk))
        assert edits[walk].diagnostics["layer_walk"] == walk
    for name, d in edits[False].patch.deltas.items():
        assert torch.allclose(edits[True].patch.deltas[name], d, rtol=1e-4, atol=1e-5 * float(d.abs().max())), name


def test_a_layer_walk_that_disagrees_with_fresh_forwards_is_dropped(corpus, monkeypatch):
    """The walk's first reads are compared with fresh forwards; if they differ, or the walk cannot re-run a
    block at all, MEMIT reads every layer fresh (same updates)."""
    from editcore.methods import batch_update

    lm = tiny.lm("llama")
    hp = _hp(corpus, layers=[0, 1])
    reference = get_method("memit").compute(lm, [REQ, REQ2], hp)
    real = batch_update.LayerWalk._run
    monkeypatch.setattr(batch_update.LayerWalk, "_run", lambda self, b, h, plain=False: real(self, b, h, plain) + 0.5)
    edit = get_method("memit").compute(lm, [REQ, REQ2], hp)
    assert reference.diagnostics["layer_walk"] and not edit.diagnostics["layer_walk"]
    for name, d in reference.patch.deltas.items():
        assert torch.allclose(edit.patch.deltas[name], d, rtol=1e-4, atol=1e-5 * float(d.abs().max())), name

    def broken(self, b, h, plain=False):
        raise TypeError("this block wants other arguments")

    monkeypatch.setattr(batch_update.LayerWalk, "_run", broken)
    edit = get_method("memit").compute(lm, [REQ, REQ2], hp)
    assert not edit.diagnostics["layer_walk"]
    for name, d in reference.patch.deltas.items():
        assert torch.allclose(edit.patch.deltas[name], d, rtol=1e-4, atol=1e-5 * float(d.abs().max())), name


@pytest.mark.parametrize("family, warned", [("gemma3", True), ("gpt2", False)])
def test_identity_covariance_on_a_post_norm_model_is_warned(family, warned, corpus):
    """MEMIT without statistics fails on Gemma's post-MLP-norm blocks (0/10 on Gemma-3-270M): the edit says so."""
    lm = tiny.lm(family)
    edit = get_method("memit").compute(lm, [REQ], _hp(corpus, stats_samples=0))
    assert any("identity covariance" in w for w in edit.warnings) == warned
    with_stats = get_method("memit").compute(lm, [REQ], _hp(corpus))
    assert not any("identity covariance" in w for w in with_stats.warnings)


def test_singular_statistics_are_warned(corpus):
    """Too few statistics tokens leave C singular (no Cholesky factor): MEMIT solves with C itself and says so."""
    lm = tiny.lm("llama")
    few = get_method("memit").compute(lm, [REQ], _hp(corpus, stats_samples=20))
    assert any("not positive definite" in w for w in few.warnings)
    enough = get_method("memit").compute(lm, [REQ], _hp(corpus))
    assert not any("not positive definite" in w for w in enough.warnings)
