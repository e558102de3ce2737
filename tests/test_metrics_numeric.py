import math

import pytest
import torch

from editcore.metrics import numeric
from editcore.metrics.nkl import kl_rows


def test_bootstrap_ci_contains_mean_and_is_seeded():
    vals = [0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.2, 0.9]
    ci = numeric.bootstrap_ci(vals)
    assert ci.lo <= ci.mean <= ci.hi
    assert ci.mean == pytest.approx(sum(vals) / len(vals))
    assert ci.lo < ci.mean < ci.hi  # real spread -> a real interval
    assert numeric.bootstrap_ci(vals) == ci  # same seed, same interval
    assert ci.n == 10


def test_bootstrap_ci_degenerate_cases():
    assert numeric.bootstrap_ci([]).n == 0
    one = numeric.bootstrap_ci([0.3])
    assert (one.lo, one.mean, one.hi) == (0.3, 0.3, 0.3)
    with pytest.raises(ValueError):
        numeric.bootstrap_ci([1.0, float("nan")])


def test_harmonic_mean():
    assert numeric.harmonic_mean([1.0, 0.5, 0.0]) == 0.0
    assert numeric.harmonic_mean([1.0, 0.5]) == pytest.approx(2 / (1 + 2))
    assert numeric.harmonic_mean([0.6, 0.6, 0.6]) == pytest.approx(0.6)


def test_js_divergence_by_hand():
    assert numeric.js_divergence([1, 2, 3], [2, 4, 6]) == pytest.approx(0.0, abs=1e-12)  # same after normalising
    # Disjoint supports: JS = ln 2 exactly.
    assert numeric.js_divergence([1, 0], [0, 1]) == pytest.approx(math.log(2))
    # p = (1, 0), q = (1/2, 1/2): m = (3/4, 1/4).
    want = 0.5 * math.log(1 / 0.75) + 0.5 * (0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25))
    assert numeric.js_divergence([1, 0], [1, 1]) == pytest.approx(want)


def test_kl_rows_identical_is_zero_and_hand_value():
    lp = torch.log_softmax(torch.randn(3, 50), -1)
    assert torch.allclose(kl_rows(lp, lp), torch.zeros(3), atol=1e-6)
    p = torch.tensor([[0.5, 0.5, 0.0]])
    q = torch.tensor([[0.25, 0.25, 0.5]])
    got = kl_rows(p.log(), q.log())
    assert got.item() == pytest.approx(math.log(2), rel=1e-6)  # 0.5 ln2 + 0.5 ln2 + 0


def test_kl_rows_zero_probability_is_finite():
    post = torch.tensor([[0.0, 1.0]]).log()  # contains -inf
    pre = torch.tensor([[1.0, 0.0]]).log()  # P_pre = 0 where P_post = 1
    got = kl_rows(post, pre)
    assert torch.isfinite(got).all()
    assert got.item() == pytest.approx(-numeric.LOG_FLOOR, rel=1e-5)  # floored, huge but finite


def test_floor_log():
    assert numeric.floor_log(float("-inf")) == numeric.LOG_FLOOR
    assert numeric.floor_log(float("nan")) == numeric.LOG_FLOOR
    assert numeric.floor_log(-1.0) == -1.0
