"""Causal tracing and the logit lens (editcore.tracing) on tiny random models of every family."""

import json
import math

import pytest
import torch

import tiny
from editcore import hooks
from editcore.errors import InputError
from editcore.scope import Patch
from editcore.tracing import localisation, summary
from editcore.tracing.lens import logit_lens
from editcore.tracing.noise import embedding_std
from editcore.tracing.reference import restored_probs
from editcore.tracing.runs import prepare, subject_span
from editcore.tracing.settings import TraceSettings, window_range
from editcore.tracing.trace import patch_digest, trace, trace_cached

TEMPLATE, SUBJECT, ANSWER = "{} is located in the city of", "The Louvre", "Paris"
SHORT = "{} is in"  # fewer tokens where a test traces every family


@pytest.fixture(autouse=True)
def _home(tmp_home):
    yield


@pytest.fixture(scope="module")
def lms():
    return {}


def get_lm(lms, family):
    if family not in lms:
        lms[family] = tiny.lm(family)
    return lms[family]


def prep_of(lm, samples=2, **kw):
    st = TraceSettings(samples=samples, **kw)
    with lm.scope():
        return prepare(lm, TEMPLATE, SUBJECT, ANSWER, st, embedding_std(lm)["std"])


@pytest.mark.parametrize("family", tiny.FAMILIES)
def test_the_batched_replay_equals_plain_forwards_on_every_cell(lms, family):
    lm = get_lm(lms, family)
    st = TraceSettings(samples=2, window=2)
    with lm.scope():
        fast = trace(lm, SHORT, SUBJECT, ANSWER, st, engine="replay")
        slow = trace(lm, SHORT, SUBJECT, ANSWER, st, engine="reference")
    assert fast["engine"] == "replay" and slow["engine"] == "reference"
    for kind in ("hidden", "mlp", "attn"):
        a, b = torch.tensor(fast["kinds"][kind]["scores"]), torch.tensor(slow["kinds"][kind]["scores"])
        assert a.shape == (len(fast["tokens"]), lm.adapter.n_layers)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-9)
        assert not torch.equal(a, torch.full_like(a, fast["low"]))  # restorations do change the answer
    assert fast["high"] == slow["high"] and fast["low"] == slow["low"]


@pytest.mark.parametrize("family", ["gpt2", "llama", "gemma3"])
def test_restoring_every_hidden_state_gives_the_clean_probability_and_none_the_corrupted(lms, family):
    lm = get_lm(lms, family)
    prep = prep_of(lm, samples=3)
    L, T = lm.adapter.n_layers, prep.T
    everything = [("hidden", layer, t) for layer in range(L) for t in range(T)]
    with lm.scope():
        all_, none = restored_probs(lm, prep, [everything, []])
        last_layer_only = restored_probs(lm, prep, [[("hidden", L - 1, t) for t in range(T)]])[0]
    assert math.isclose(all_, prep.high, rel_tol=1e-6)
    assert math.isclose(last_layer_only, prep.high, rel_tol=1e-6)
    assert math.isclose(none, prep.low, rel_tol=1e-6)
    assert abs(prep.high - prep.low) > 1e-6 * prep.high  # the noise does change the answer here


def test_the_trace_table_ends_at_the_clean_and_starts_at_the_corrupted_probability(lms):
    lm = get_lm(lms, "llama")
    with lm.scope():
        tr = trace(lm, TEMPLATE, SUBJECT, ANSWER, TraceSettings(samples=2))
    hidden = tr["kinds"]["hidden"]["scores"]
    assert math.isclose(hidden[-1][-1], tr["high"], rel_tol=1e-5)  # the last state is the clean output
    s0 = tr["subject_range"][0]
    assert all(v == tr["low"] for row in hidden[:s0] for v in row)  # before the subject nothing differs
    assert all(row[-1] == tr["low"] for row in hidden[:-1])  # the last block's output at earlier tokens


def test_noise_is_added_to_the_subject_only_with_the_requested_scale(lms):
    lm = get_lm(lms, "gpt2")
    prep = prep_of(lm, samples=16, noise=3.0)
    std = embedding_std(lm)["std"]
    assert prep.noise.shape == (16, prep.s1 - prep.s0, lm.adapter.d_model)
    assert abs(float(prep.noise.std()) / (3.0 * std) - 1) < 0.1
    with lm.scope(), hooks.capture(lm.adapter.block(0), "in") as got:
        lm.model.base_model(input_ids=torch.tensor([prep.ids]), use_cache=False)
    clean_in = got["x"][0]
    diff = (prep.corrupt_in[0] - clean_in).abs().amax(-1)  # [samples, T]
    assert bool((diff[:, prep.s0:prep.s1] > 0).all())
    outside = torch.cat([diff[:, :prep.s0], diff[:, prep.s1:]], dim=1)
    assert outside.numel() and float(outside.max()) == 0.0


def test_the_embedding_std_is_computed_once_and_matches_a_direct_computation(lms, tmp_path):
    lm = get_lm(lms, "gemma3")
    got = embedding_std(lm)
    from editcore.catalog import load_catalog

    ids = [i for s in sorted({c.subject for c in load_catalog()})
           for i in lm.tokenizer(" " + s, add_special_tokens=False)["input_ids"]]
    with torch.no_grad():
        direct = lm.adapter.module("embed")(torch.tensor([ids]))[0].double().std().item()
    assert math.isclose(got["std"], direct, rel_tol=1e-9) and got["tokens"] == len(ids)
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(tiny.CORPUS))
    other = embedding_std(lm, str(corpus))
    assert other["corpus"].startswith("file:") and other["std"] != got["std"]
    with pytest.raises(InputError):
        embedding_std(lm, str(tmp_path / "missing.txt"))


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox", "gemma3"])
def test_the_logit_lens_at_the_last_layer_is_the_models_own_distribution(lms, family):
    lm = get_lm(lms, family)
    with lm.scope():
        lens = logit_lens(lm, TEMPLATE, SUBJECT, {"old": "Paris", "new": "London"})
        ids, _s0, s1 = subject_span(lm.tokenizer, TEMPLATE, SUBJECT)
        probs = torch.softmax(lm.model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
    assert lens["layers"] == ["emb"] + [str(j) for j in range(lm.adapter.n_layers)]
    for name, pos in (("last", len(ids) - 1), ("subject_last", s1 - 1)):
        entry = lens["positions"][name]
        assert entry["index"] == pos
        for label, word in (("old", "Paris"), ("new", "London")):
            tid = lm.tokenizer(" " + word, add_special_tokens=False)["input_ids"][0]
            assert math.isclose(entry["p"][label][-1], float(probs[pos, tid]), rel_tol=1e-4)
            assert entry["rank"][label][-1] == int((probs[pos] > probs[pos, tid]).sum())
        assert entry["top"][-1][0] == lm.tokenizer.decode([int(probs[pos].argmax())])
        assert len({round(p, 9) for p in entry["p"]["old"]}) > 1  # earlier layers read something else


def test_subject_span_covers_exactly_the_subject(lms):
    for family in ("gpt2", "gemma3"):
        tok = get_lm(lms, family).tokenizer
        for template, subject in ((TEMPLATE, SUBJECT), ("The capital of {} is", "Japan"),
                                  ("{}'s mother tongue is", "Danielle Darrieux")):
            ids, s0, s1 = subject_span(tok, template, subject)
            assert tok.decode(ids[s0:s1]).strip() == subject
    with pytest.raises(InputError):
        subject_span(tok, "no slot here", "x")


def test_a_traced_edit_shows_the_patched_model_and_leaves_the_model_as_it_was(lms):
    lm = get_lm(lms, "gpt2")
    name = lm.adapter.mlp_out_param_name(1)
    w = dict(lm.model.named_parameters())[name]
    patch = Patch({name: torch.randn_like(w) * 0.5})
    before = lm.digest()
    with lm.scope():
        plain = trace_cached(lm, TEMPLATE, SUBJECT, "London", TraceSettings(samples=2))
    with lm.scope(patch):
        edited = trace_cached(lm, TEMPLATE, SUBJECT, "London", TraceSettings(samples=2), patch=patch)
        again = trace_cached(lm, TEMPLATE, SUBJECT, "London", TraceSettings(samples=2), patch=patch)
    assert lm.digest() == before
    assert edited["high"] != plain["high"] and not edited["cached"] and again["cached"]
    assert again["kinds"] == edited["kinds"]
    assert patch_digest(patch) != patch_digest(Patch({name: torch.zeros_like(w)}))
    assert patch_digest(None) == "" and patch_digest(Patch(rewrite=lambda t: t)) is None
    with lm.scope():
        other = trace_cached(lm, TEMPLATE, SUBJECT, "London", TraceSettings(samples=3))
    assert not other["cached"] and hooks.count(lm.model) == 0
    json.dumps(other, allow_nan=False)


def test_a_replay_that_does_not_reproduce_the_corrupted_run_falls_back(lms, monkeypatch):
    from editcore.tracing import replay

    lm = get_lm(lms, "llama")
    real = replay.run_token

    def off(lm_, prep, t, rows):
        final, p = real(lm_, prep, t, rows)
        return final + 1.0, p

    monkeypatch.setattr(replay, "run_token", off)
    with lm.scope():
        tr = trace(lm, TEMPLATE, SUBJECT, ANSWER, TraceSettings(samples=1))
    assert tr["engine"] == "reference"


def test_bad_input_is_a_one_line_error(lms):
    lm = get_lm(lms, "gpt2")
    with lm.scope():
        with pytest.raises(InputError, match="subject"):
            trace(lm, "{} is in", " ", ANSWER)
        with pytest.raises(InputError, match="at most"):
            trace(lm, "{}" + " is located in the city of" * 10, SUBJECT, ANSWER)
        with pytest.raises(InputError, match="samples"):
            trace(lm, TEMPLATE, SUBJECT, ANSWER, TraceSettings(samples=0))
    with pytest.raises(InputError):
        TraceSettings.from_dict({"nonsense": 1})


def test_the_window_follows_the_paper_and_scales_with_depth():
    assert window_range(20, 10, 48) == (15, 25) and window_range(0, 10, 48) == (0, 5)
    assert window_range(47, 10, 48) == (42, 48)
    assert TraceSettings().window_for(48) == 10 and TraceSettings().window_for(18) == 4
    assert TraceSettings().window_for(30) == 6 and TraceSettings().window_for(3) == 1
    assert TraceSettings(window=7).window_for(18) == 7


def fake_trace(scores_mlp, s0, s1, high=1.0, low=0.0):
    T, L = len(scores_mlp), len(scores_mlp[0])
    flat = [[low] * L for _ in range(T)]
    return {"tokens": ["t"] * T, "subject_range": [s0, s1], "subject_last": s1 - 1, "n_layers": L, "high": high,
            "low": low, "kinds": {"mlp": {"scores": scores_mlp, "window": 1},
                                  "hidden": {"scores": flat, "window": 1}, "attn": {"scores": flat, "window": 1}}}


def test_the_average_follows_the_papers_token_categories():
    a = fake_trace([[0, 0], [0.2, 0.4], [0.6, 0.1], [0.1, 0.1], [0.05, 0], [0, 0.3]], 1, 3)  # subject: tokens 1, 2
    b = fake_trace([[0, 0], [0.8, 0.2], [0.3, 0.3], [0.5, 0.0]], 1, 2)  # one-token subject
    got = summary.average([a, b])
    aie = got["kinds"]["mlp"]["aie"]
    assert aie["first subject token"] == pytest.approx([(0.2 + 0.8) / 2, (0.4 + 0.2) / 2])
    assert aie["last subject token"] == pytest.approx([(0.6 + 0.8) / 2, (0.1 + 0.2) / 2])
    assert aie["middle subject tokens"] == [None, None]  # neither subject has a middle
    assert aie["first subsequent token"] == pytest.approx([(0.1 + 0.3) / 2, (0.1 + 0.3) / 2])
    assert aie["further tokens"] == pytest.approx([0.05, 0.0])  # only a has one: token 4
    assert aie["last token"] == pytest.approx([(0 + 0.5) / 2, (0.3 + 0) / 2])
    assert got["kinds"]["mlp"]["n"]["further tokens"] == 1
    assert got["strongest_mlp_at_subject_last"] == 2
    advice = summary.layer_advice(got, "tiny-none")
    assert advice["traced_layer"] == 0 and advice["shipped_layer"] is None and advice["sweep"] == []


def test_layer_advice_reads_the_committed_sweeps():
    rows = summary.sweep_rows("gemma-3-270m")
    assert [r["layer"] for r in rows] == [3, 5, 8, 11] and all(r["success"] == 1.0 for r in rows)
    assert rows[0]["neighbourhood"] == pytest.approx(0.24)


def test_the_localisation_analysis_separates_layer_from_tracing_effect():
    import random

    rnd = random.Random(0)
    rows = []
    for fact in range(8):
        for layer in range(4):
            effect = rnd.random()
            rows.append({"fact": fact, "layer": layer, "mlp_last": effect, "mlp_max": effect, "hidden_last": effect,
                         "rewrite": 0.2 * layer + 0.01 * rnd.random(), "success": float(layer > 1),
                         "neighbourhood": 1 - 0.1 * layer, "efficacy": 1.0})
    got = localisation.analyse(rows)
    r2 = got["r2"]["rewrite"]
    assert r2["layer"] > 0.99 and r2["effect"] < 0.2 and r2["both"] >= r2["layer"]
    assert abs(got["correlation"]["rewrite"]["mlp_last"]) < 0.4
    assert localisation.pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert localisation.pearson([1, 1, 1], [2, 4, 6]) is None
    per = localisation.per_layer(rows)
    assert [p["layer"] for p in per] == [0, 1, 2, 3] and per[3]["success"] == 1.0
    tr = fake_trace([[0.0, 0.0], [0.5, 0.25], [0.2, 1.0]], 0, 2, high=1.0, low=0.0)
    assert localisation.effects(tr, 0) == {"mlp_last": 0.5, "mlp_max": 0.5, "hidden_last": 0.0}
