"""MALMEN on tiny random models: the aggregated update is the least-squares solution of the edits' value
shifts, and a batch of more than a hundred edits gives one update per edited weight."""

import math

import pytest
import torch

import tiny
from editcore import catalog
from editcore.methods import get_method
from editcore.methods.base import load_hparams
from editcore.methods.malmen.net import MalmenNet, ridge_factors
from editcore.methods.mend import edit_targets
from editcore.methods.mend.factors import base_pass, edit_factors, make_batch
from editcore.methods.mend.data import Example
from editcore.methods.mend.training import batch_deltas
from editcore.types import Request

pytestmark = pytest.mark.usefixtures("tmp_home")

REQ = Request("{} is located in the city of", "The Louvre", "London", "Paris")


def _net(lm, log_lambda=math.log(0.3)):
    net = MalmenNet(edit_targets(lm, (), "mlp_out"), rank=8, n_blocks=2, edit_lr=1e-2, seed=1)
    g = torch.Generator().manual_seed(7)
    for fnet in net.nets.values():
        for norm in (fnet.norm_u, fnet.norm_delta):  # mean 0, standard deviation 1
            norm.count.fill_(2.0)
            norm.m2.fill_(1.0)
        for layer in fnet.layers:  # a network that is not the identity
            with torch.no_grad():
                layer.U.add_(0.3 * torch.randn(layer.U.shape, generator=g))
    with torch.no_grad():
        net.log_lambdas.fill_(log_lambda)
    return net


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_one_edit_is_the_least_squares_solution(family):
    """The update of one edit equals argmin_dW sum_t |dW k_t - s_t|^2 + lambda |dW|^2, solved here directly as
    an augmented least-squares problem in float64 (not by either normal equation the method uses)."""
    lm = tiny.lm(family)
    net = _net(lm)
    with lm.scope(), torch.no_grad():
        ex = Example("e", REQ.text, REQ.target_new, "", (), ())
        deltas, _ = batch_deltas(lm, net.transform(), [ex], targets=net.targets, answer_only=True)
        batch = make_batch(lm, [(REQ.text, REQ.target_new)])
        factors, _, _ = edit_factors(lm, base_pass(lm, batch, net.targets), batch, [0], answer_only=True)
    n_answer = batch.labels.numel()
    lam = math.exp(float(net.log_lambdas[0].detach()))
    for i, t in enumerate(net.targets):
        keys, grads = factors[0][i]
        assert keys.shape == (n_answer, t.d_in)  # keys at the target's tokens only (MALMEN's "ans")
        with torch.no_grad():
            shifts = net.shifts(i, keys, grads).double()
        k = keys.double()
        a = torch.cat([k, math.sqrt(lam) * torch.eye(t.d_in, dtype=torch.float64)])
        rhs = torch.cat([shifts, torch.zeros(t.d_in, t.d_out, dtype=torch.float64)])
        want = torch.linalg.lstsq(a, rhs).solution.T  # [d_out, d_in]
        got = deltas[t.param].T if t.transposed else deltas[t.param]
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-6 * float(want.abs().max()))
        assert float(want.abs().max()) > 0


def test_both_normal_equations_agree_and_a_small_ridge_meets_the_shifts():
    g = torch.Generator().manual_seed(0)
    d_in, d_out = 12, 5
    for n in (4, 30):  # fewer keys than dimensions (the n x n system) and more (the d x d system)
        keys = torch.randn(n, d_in, generator=g)
        shifts = torch.randn(n, d_out, generator=g)
        u, s = ridge_factors(keys, shifts, torch.tensor(math.log(0.5)))
        k = keys.double()
        direct = shifts.double().T @ k @ torch.linalg.inv(k.T @ k + 0.5 * torch.eye(d_in, dtype=torch.float64))
        torch.testing.assert_close((s.T @ u).double(), direct, rtol=1e-5, atol=1e-6)
    keys = torch.randn(4, d_in, generator=g)
    shifts = torch.randn(4, d_out, generator=g)
    u, s = ridge_factors(keys, shifts, torch.tensor(-20.0))
    torch.testing.assert_close(keys @ (s.T @ u).T, shifts, rtol=1e-4, atol=1e-4)  # dW k_t = s_t


def test_a_batch_of_over_a_hundred_edits_gives_one_update_per_weight():
    lm = tiny.lm("llama")
    m = get_method("malmen")
    assert m.batched
    tiny.train_if_needed(lm, m)
    reqs = [c.request(0) for c in catalog.load_catalog()[:120]]
    d0 = lm.digest()
    edit = m.compute(lm, reqs, load_hparams("malmen", m.Hparams, None))
    assert lm.digest() == d0
    targets = [t["param"] for t in m.trained(lm)["targets"]]
    params = dict(lm.model.named_parameters())
    assert sorted(edit.patch.deltas) == sorted(targets)
    for name, d in edit.patch.deltas.items():
        assert d.shape == params[name].shape and torch.isfinite(d).all() and float(d.abs().max()) > 0
    assert len(edit.requests) == 120
    with lm.scope(edit.patch):
        assert lm.digest() != d0
    assert lm.digest() == d0
