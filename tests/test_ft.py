"""FT and FT-L on tiny random models (plus one integration test on Gemma-3-270M)."""

import logging
import statistics
import time

import pytest

import tiny
from editcore.errors import InputError
from editcore.methods import get_method
from editcore.methods.base import HPARAMS_DIR, load_hparams
from editcore.methods.ft import FTHparams, FTLHparams, build_batch
from editcore.text import next_token_logprobs, score_targets, target_ids
from editcore.types import Request

REQ = Request("The {} is located in the city of", "Eiffel Tower", "Rome", "Paris")


@pytest.fixture(scope="module")
def gemma_tiny():
    return tiny.lm("gemma3")


@pytest.fixture(scope="module")
def gpt2_tiny():
    return tiny.lm("gpt2")


def test_targets_carry_no_special_tokens(gemma_tiny):
    lm = gemma_tiny
    tok = lm.tokenizer
    batch = build_batch(lm, [REQ, Request("{} is developed by", "Windows 11", "Apple", "Microsoft")])
    special = set(tok.all_special_ids)
    # The tiny Gemma-style tokenizer does add <bos> to prompts ...
    assert int(batch.ids[0, 0]) == tok.bos_token_id
    # ... but no trained target position may hold a special token (EasyEdit's FT trained on a stray <bos>).
    trained = batch.ids[batch.rows, batch.positions + 1].tolist()
    assert trained == batch.labels.tolist()
    assert not special & set(trained)
    assert batch.labels[batch.owner == 0].tolist() == target_ids(tok, "Rome")


def test_step0_loss_matches_independent_scoring(gemma_tiny):
    lm = gemma_tiny
    m = get_method("ft")
    edit = m.compute(lm, [REQ], FTHparams(layer=1, steps=1, stop_at_top1=False, stop_loss=0.0))
    # The first loss comes from replaying blocks 1..L-1; editcore.text scores with a plain full forward.
    expected = score_targets(lm, [REQ.text], [REQ.target_new])[0].mean_nll
    assert edit.diagnostics["loss_curve"][0] == pytest.approx(expected, rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_ft_makes_target_top1_and_touches_one_matrix(family):
    lm = tiny.lm(family)
    d0 = lm.digest()
    m = get_method("ft")
    hp = FTHparams(layer=1, lr=5e-2, steps=40)
    edit = m.compute(lm, [REQ], hp)
    assert lm.digest() == d0
    assert list(edit.patch.deltas) == [lm.adapter.mlp_out_param_name(1)]
    assert edit.diagnostics["stop_reason"] == "top1"
    losses = edit.diagnostics["loss_curve"]
    assert losses[-1] < losses[0]
    before = score_targets(lm, [REQ.text], [REQ.target_new])[0]
    with lm.scope(edit.patch):
        after = score_targets(lm, [REQ.text], [REQ.target_new])[0]
    assert all(after.token_correct)
    assert after.logprob > before.logprob
    assert lm.digest() == d0


def test_ft_can_train_input_projections_too(gemma_tiny):
    lm = gemma_tiny
    edit = get_method("ft").compute(lm, [REQ], FTHparams(layer=2, steps=2, train_mlp_in=True, stop_at_top1=False))
    ad = lm.adapter
    assert set(edit.patch.deltas) == {ad.mlp_out_param_name(2), ad.module_name("mlp_gate", 2) + ".weight",
                                      ad.module_name("mlp_up", 2) + ".weight"}
    assert all(float(d.abs().max()) > 0 for d in edit.patch.deltas.values())


@pytest.mark.parametrize("family", ["gpt2", "gemma3"])
def test_ft_l_respects_linf_bound(family):
    lm = tiny.lm(family)
    eps = 2e-3
    hp = FTLHparams(layer=1, lr=1e-2, steps=5, norm_constraint=eps, stop_at_top1=False, stop_loss=0.0)
    edit = get_method("ft_l").compute(lm, [REQ], hp)
    (delta,) = edit.patch.deltas.values()
    assert edit.diagnostics["steps"] == 5
    # lr > eps, so without the clamp entries would move by up to 5 * lr.
    assert float(delta.abs().max()) <= eps * (1 + 1e-5) + 1e-7
    assert float(delta.abs().max()) >= eps * 0.99
    unconstrained = get_method("ft").compute(lm, [REQ], FTHparams(layer=1, lr=1e-2, steps=5, stop_at_top1=False,
                                                                  stop_loss=0.0))
    assert float(next(iter(unconstrained.patch.deltas.values())).abs().max()) > 2 * eps


def test_grad_flags_and_weights_restored_when_interrupted(gpt2_tiny):
    lm = gpt2_tiny
    d0 = lm.digest()

    def boom(stage, frac):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        get_method("ft_l").compute(lm, [REQ], FTLHparams(layer=0, stop_at_top1=False), progress=boom)
    assert lm.digest() == d0
    assert not any(p.requires_grad for p in lm.model.parameters())
    assert all(p.grad is None for p in lm.model.parameters())


def test_already_answer_gives_empty_update_and_warns(gpt2_tiny, caplog):
    lm = gpt2_tiny
    m = get_method("ft")
    first = m.compute(lm, [REQ], FTHparams(layer=1, lr=5e-2, steps=40))
    with lm.scope(first.patch) as scope:
        inside = lm.digest()
        with caplog.at_level(logging.WARNING, logger="editcore.methods.ft"):
            again = m.compute(lm, [REQ], FTHparams(layer=1, lr=5e-2, steps=40))
        assert lm.digest() == inside
        assert scope.depth == 1
    assert again.diagnostics["already_answer"] and again.diagnostics["steps"] == 0
    assert float(next(iter(again.patch.deltas.values())).abs().max()) == 0.0
    assert "already" in caplog.text


def test_batched_requests_train_jointly(gpt2_tiny):
    lm = gpt2_tiny
    reqs = [REQ, Request("{} is developed by", "Windows 11", "Apple", "Microsoft")]
    edit = get_method("ft").compute(lm, reqs, FTHparams(layer=1, lr=5e-2, steps=60))
    with lm.scope(edit.patch):
        scores = score_targets(lm, [r.text for r in reqs], [r.target_new for r in reqs])
    assert edit.diagnostics["stop_reason"] == "top1"
    assert all(all(s.token_correct) for s in scores)


@pytest.mark.parametrize("bad, match", [
    (Request("The Eiffel Tower is in", "Eiffel Tower", "Rome"), "'{}'"),
    (Request("The {} is in", "Eiffel Tower", "   "), "empty"),
    (Request("The {} is in", "Eiffel Tower", "Paris", "paris"), "equals"),
])
def test_bad_requests_are_rejected_before_editing(gpt2_tiny, bad, match):
    d0 = gpt2_tiny.digest()
    with pytest.raises(InputError, match=match):
        get_method("ft").compute(gpt2_tiny, [bad], FTHparams(layer=0))
    assert gpt2_tiny.digest() == d0


def test_bad_layer_and_hparams(gpt2_tiny):
    with pytest.raises(InputError, match="out of range"):
        get_method("ft_l").compute(gpt2_tiny, [REQ], FTLHparams(layer=7))
    with pytest.raises(InputError, match="norm_constraint"):
        load_hparams("ft_l", FTLHparams, None, {"norm_constraint": -1.0})
    with pytest.raises(InputError, match="lr"):
        load_hparams("ft", FTHparams, None, {"lr": float("nan")})
    with pytest.raises(InputError, match="unknown hyper-parameter"):
        load_hparams("ft", FTHparams, None, {"norm_constraint": 1e-3})


@pytest.mark.parametrize("method", ["ft", "ft_l"])
@pytest.mark.parametrize("model", ["gemma-3-270m", "smollm2-135m"])
def test_bundled_defaults_load_and_fit(method, model):
    assert (HPARAMS_DIR / method / f"{model}.json").is_file()
    m = get_method(method)
    hp = load_hparams(method, m.Hparams, model)
    n_layers = {"gemma-3-270m": 18, "smollm2-135m": 30}[model]
    assert 0 <= hp.layer < n_layers


# ---- the real model -----------------------------------------------------------------------------------
# Facts Gemma-3-270M completes correctly with greedy decoding (checked with editcore.decoding.greedy).
FACTS = [
    Request("{} is located in the city of", "The Louvre", "London", "Paris"),
    Request("The {} is located in the city of", "Eiffel Tower", "Rome", "Paris"),
    Request("The {} is located in the city of", "Colosseum", "Berlin", "Rome"),
    Request("The capital of {} is", "Japan", "Seoul", "Tokyo"),
    Request("{} was developed by", "Windows", "Apple", "Microsoft"),
    Request("The {} is made by", "iPhone", "Samsung", "Apple"),
    Request("The {} is located in the country of", "Great Wall", "Japan", "China"),
    Request("The {} was painted by", "Mona Lisa", "Picasso", "Leonardo"),
    Request("The official language of {} is", "Brazil", "Spanish", "Portuguese"),
    Request("The {} is made by", "PlayStation", "Nintendo", "Sony"),
]


@pytest.mark.integration
def test_ft_l_edits_gemma(gemma):
    lm = gemma
    m = get_method("ft_l")
    hp = load_hparams("ft_l", m.Hparams, "gemma-3-270m")
    d0 = lm.digest()
    before = next_token_logprobs(lm, [r.text for r in FACTS]).argmax(-1)
    true_first = [target_ids(lm.tokenizer, r.target_true)[0] for r in FACTS]
    assert sum(int(b) == t for b, t in zip(before.tolist(), true_first)) >= 9  # the facts are known
    hits, secs = 0, []
    for r in FACTS:
        t0 = time.perf_counter()
        edit = m.compute(lm, [r], hp)
        secs.append(time.perf_counter() - t0)
        assert float(next(iter(edit.patch.deltas.values())).abs().max()) <= hp.norm_constraint * (1 + 1e-5)
        with lm.scope(edit.patch):
            top = int(next_token_logprobs(lm, [r.text])[0].argmax())
        hits += top == target_ids(lm.tokenizer, r.target_new)[0]
        assert lm.digest() == d0
    logging.getLogger(__name__).info("FT-L on Gemma: %d/10, median %.2fs", hits, statistics.median(secs))
    assert hits >= 7
