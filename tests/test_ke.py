"""KE on tiny random models: the update is the paper's constrained transform of the fine-tuning gradient, and
the multiplier of its Lagrangian behaves as a multiplier."""

import pytest
import torch

import tiny
from editcore.methods.ke.net import KENet
from editcore.methods.mend import edit_targets
from editcore.methods.mend.training import edit_deltas
from editcore.types import Request

pytestmark = pytest.mark.usefixtures("tmp_home")

REQ = Request("{} is located in the city of", "The Louvre", "London", "Paris")


def _net(lm, max_scale=0.5):
    targets = edit_targets(lm, (), "mlp")
    return KENet(targets, lm.model.get_input_embeddings().weight.shape[1], lstm_hidden=8, d_cond=16, hidden=16,
                 max_scale=max_scale, seed=3)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_update_is_the_gated_gradient_plus_a_rank_one_shift(family):
    """dW = max_scale sigmoid(eta) (grad W ⊙ softmax(alpha) gamma^T + softmax(beta) zeta^T) for every edited
    weight, with grad W the true fine-tuning gradient (also in GPT-2's [in, out] Conv1D layout)."""
    lm = tiny.lm(family)
    net = _net(lm)
    with lm.scope(), torch.no_grad():
        deltas, _ = edit_deltas(lm, net.transform(lm), REQ.text, REQ.target_new, targets=net.targets)
        c = net.encode(lm, REQ.text, REQ.target_new)
    assert set(deltas) == {t.param for t in net.targets}
    for t, head in zip(net.targets, net.heads):
        grad = tiny.nll_grad(lm, REQ.text, REQ.target_new, t.param)
        grad = grad.T if t.transposed else grad  # as [d_out, d_in]
        with torch.no_grad():
            s, a, g, b, z = head.gates(c)
            want = s * (grad * torch.outer(a, g) + torch.outer(b, z))
        got = deltas[t.param].T if t.transposed else deltas[t.param]
        assert got.shape == (t.d_out, t.d_in)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-8)
        assert 0 < float(s) < head.max_scale  # the sigmoid bounds the step


def test_zero_gradient_leaves_only_the_bounded_rank_one_shift():
    """Without a gradient KE's update is its rank-one shift alone, and the gated gradient part is zero."""
    lm = tiny.lm("llama")
    net = _net(lm, max_scale=1e-2)
    head, t = net.heads[0], net.targets[0]
    with torch.no_grad():
        c = net.encode(lm, REQ.text, REQ.target_new)
        u, d = head.factors(c, torch.zeros(5, t.d_in), torch.zeros(5, t.d_out))
        dense = d.T @ u
        s, _a, _g, b, z = head.gates(c)
    assert torch.linalg.matrix_rank(dense) == 1
    torch.testing.assert_close(dense, s * torch.outer(b, z))
    # softmax rows sum to one: the shift's row sums are bounded by max_scale * |zeta|
    assert float(dense.sum(0).abs().max()) <= 1e-2 * float(z.abs().max()) + 1e-9
    # and the gradient tokens contribute nothing
    assert torch.count_nonzero(d[:-1]) == 0


def test_condition_depends_on_the_new_target():
    lm = tiny.lm("gpt2")
    net = _net(lm)
    with torch.no_grad():
        a = net.encode(lm, REQ.text, "London")
        b = net.encode(lm, REQ.text, "Rome")
    assert a.shape == (16,) and not torch.allclose(a, b)


def test_multiplier_rises_while_the_constraint_is_violated_and_stays_non_negative():
    """Gradient ascent on the multiplier: with KL above the margin it grows; projected back to >= 0."""
    from editcore.methods import get_method

    lm = tiny.lm("llama")
    m = get_method("ke")
    thp = tiny.training_hparams(m, margin_kl=0.0, lr_alpha=0.5)
    tr = m.trainer(lm, thp, m.targets(lm, thp), m._data(lm, thp), "probe")
    loss = tr.loss(torch.tensor([1.0]), torch.tensor([0.3]))  # KL 0.3 > margin 0
    loss.backward()
    assert float(tr.net.multiplier.grad) < 0  # negated: the optimiser's descent step raises the multiplier
    before = float(tr.net.multiplier.detach())
    tr.opts["alpha_opt"].step()
    assert float(tr.net.multiplier.detach()) > before
    with torch.no_grad():
        tr.net.multiplier.fill_(-3.0)
    tr.after_step()
    assert float(tr.net.multiplier.detach()) == 0.0
