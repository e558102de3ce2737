"""Reference presets and the method variants of issue 24 (FT-L as EasyEdit means it, KN as EasyEdit runs it),
on tiny random models: what each preset changes, what the variants compute, worked out by hand."""

import json

import pytest
import torch

import tiny
from editcore.cases import Case, Probe
from editcore.errors import InputError
from editcore.methods import get_method
from editcore.methods.base import load_hparams
from editcore.types import Request

REQ = Request("{} is located in the city of", "The Louvre", "London", "Paris")


def test_reference_preset_overlays_the_papers_procedure_and_keeps_the_models_choices():
    rome = get_method("rome")
    fast = load_hparams("rome", rome.Hparams, "gemma-3-270m")
    ref = load_hparams("rome", rome.Hparams, "gemma-3-270m", {"preset": "reference"})
    assert (fast.preset, fast.v_stop_prob, fast.contexts) == ("fast", 0.9, "sampled")
    assert (ref.preset, ref.v_stop_prob, ref.contexts) == ("reference", 1.0, "rome")
    assert ref.stats_samples >= 10_000_000
    assert (ref.layer, ref.clamp_norm_factor) == (fast.layer, fast.clamp_norm_factor)  # the model's own
    # A user's override still wins over the preset.
    assert load_hparams("rome", rome.Hparams, "gemma-3-270m", {"preset": "reference", "v_stop_prob": 0.5}).v_stop_prob == 0.5
    memit = get_method("memit")
    m = load_hparams("memit", memit.Hparams, "gemma-3-270m", {"preset": "reference"})
    assert (m.contexts, m.key_averaging, m.v_stop_prob) == ("memit", "per_type", 1.0)
    for name in ("ft", "ft_l"):
        hp = load_hparams(name, get_method(name).Hparams, "gemma-3-270m", {"preset": "reference"})
        assert (hp.objective, hp.stop_at_top1, hp.stop_loss) == ("prompt_last", False, 0.01)
    with pytest.raises(InputError, match="no reference preset|unknown hyper-parameter"):
        load_hparams("kn", get_method("kn").Hparams, "gemma-3-270m", {"preset": "reference"})


@pytest.mark.parametrize("name", ["emmet", "pmet", "alphaedit"])
def test_memits_family_has_a_reference_preset_that_runs(name, tmp_home, corpus):
    """Every method with the preset switch can be toggled to reference (the page offers the switch to all of
    them); the MEMIT-family presets set MEMIT's procedure and keep the model's own layers."""
    from editcore.methods import available

    for m in available():
        if "preset" in get_method(m).Hparams.__dataclass_fields__:
            for model in ("gemma-3-270m", "smollm2-135m"):
                assert load_hparams(m, get_method(m).Hparams, model, {"preset": "reference"}).preset == "reference"
    method = get_method(name)
    fast = load_hparams(name, method.Hparams, "gemma-3-270m")
    ref = load_hparams(name, method.Hparams, "gemma-3-270m", {"preset": "reference"})
    assert (ref.contexts, ref.key_averaging, ref.v_stop_prob, ref.v_stop_loss) == ("memit", "per_type", 1.0, 0.05)
    assert ref.layers == fast.layers and fast.key_averaging == "contexts"
    lm = tiny.lm("gpt2")
    hp = load_hparams(name, method.Hparams, None, {"preset": "reference", "layers": [1], "stats_corpus": corpus,
                                                   "v_num_grad_steps": 2})
    d0 = lm.digest()
    edit = method.compute(lm, [REQ], hp)
    assert lm.digest() == d0 and edit.patch is not None
    assert any("100,000 Wikipedia" in w or "tokens" in w for w in edit.warnings), edit.warnings


def test_reference_contexts_have_the_papers_counts(tmp_home):
    from editcore.methods.common import reference_context_templates

    lm = tiny.lm("gpt2")
    rome = reference_context_templates(lm, "rome")
    assert rome[0] == "{}" and len(rome) == 21 and all(t.endswith(". {}") for t in rome[1:])
    memit = reference_context_templates(lm, "memit")
    assert len(memit) == 6 and memit[1].startswith("The") and memit[2].startswith("Therefore")
    assert reference_context_templates(lm, "rome") == rome  # kept on disk: the same prefixes next time


def test_memit_key_averaging_per_context_type_by_hand():
    from editcore.methods.memit import average_keys

    rows = torch.tensor([[0.0], [2.0], [4.0]])  # one request: plain prompt 0, two prefixed contexts 2 and 4
    assert average_keys(rows, 1, 3, "contexts").item() == pytest.approx(2.0)
    assert average_keys(rows, 1, 3, "per_type").item() == pytest.approx((0 + 3) / 2)


def test_rome_reference_preset_runs_and_warns_about_small_statistics(tmp_home, corpus):
    lm = tiny.lm("llama")
    rome = get_method("rome")
    # Layer 1: at layer 0 the value engine's key capture fails with three or more contexts (a separate bug).
    hp = load_hparams("rome", rome.Hparams, "tiny", {"preset": "reference", "stats_corpus": corpus,
                                                      "v_num_grad_steps": 2, "layer": 1})
    before = lm.digest()
    edit = rome.compute(lm, [REQ], hp)
    assert lm.digest() == before
    assert edit.diagnostics["n_contexts"] == 21 and edit.diagnostics["preset"] == "reference"
    assert any("100,000 Wikipedia articles" in w for w in edit.warnings)
    with pytest.raises(InputError, match="text corpus"):
        rome.compute(lm, [REQ], load_hparams("rome", rome.Hparams, "tiny", {"preset": "reference",
                                                                           "stats_corpus": "model"}))


def test_prompt_last_objective_scores_every_target_token_at_the_prompts_end():
    from editcore.methods.ft import build_batch
    from editcore.text import prompt_ids, target_ids

    lm = tiny.lm("gpt2")
    req = Request("{} is in", "The Louvre", "New York City")
    p, t = prompt_ids(lm.tokenizer, req.text), target_ids(lm.tokenizer, req.target_new)
    assert len(t) > 1
    tf = build_batch(lm, [req], "teacher_forced")
    pl = build_batch(lm, [req], "prompt_last")
    assert tf.positions.tolist() == list(range(len(p) - 1, len(p) - 1 + len(t)))
    assert pl.positions.tolist() == [len(p) - 1] * len(t) and pl.ids.shape[1] == len(p)
    assert pl.labels.tolist() == tf.labels.tolist() == t


def test_ft_l_easyedit_is_unconstrained_prompt_last():
    m = get_method("ft_l_easyedit")
    hp = load_hparams("ft_l_easyedit", m.Hparams, "gemma-3-270m")
    assert (hp.objective, hp.stop_at_top1, hp.stop_loss) == ("prompt_last", False, 0.01)
    assert not hasattr(hp, "norm_constraint") and not m.constrained
    assert hasattr(load_hparams("ft_l", get_method("ft_l").Hparams, "gemma-3-270m"), "norm_constraint")
    assert "EasyEdit" in m.info.title and "ROME" in get_method("ft_l").info.title


def test_kn_easyedit_update_by_hand():
    from editcore.methods.kn_easyedit import easyedit_deltas

    lm = tiny.lm("llama")
    ad = lm.adapter
    emb = lm.model.get_input_embeddings().weight.detach().float()
    d = easyedit_deltas(lm, [(1, 3), (1, 5)], [7], [9], 2.0)  # single-token target: 2 (e_new - e_old)
    w = ad.from_param_layout(d[ad.mlp_out_param_name(1)]) if hasattr(ad, "from_param_layout") else \
        d[ad.mlp_out_param_name(1)]
    w = w.float()
    if w.shape != (ad.d_model, ad.d_mlp):
        w = w.T
    want = 2.0 * (emb[9] - emb[7])
    assert torch.allclose(w[:, 3], want, atol=1e-5) and torch.allclose(w[:, 5], want, atol=1e-5)
    assert float(w[:, [c for c in range(ad.d_mlp) if c not in (3, 5)]].abs().max()) == 0.0
    d2 = easyedit_deltas(lm, [(2, 0)], [7, 8], [9, 10], 2.0)  # multi-token: the sums, weight 1
    w2 = d2[ad.mlp_out_param_name(2)].float()
    if w2.shape != (ad.d_model, ad.d_mlp):
        w2 = w2.T
    assert torch.allclose(w2[:, 0], emb[9] + emb[10] - emb[7] - emb[8], atol=1e-5)


def test_kn_easyedit_edits_and_restores():
    lm = tiny.lm("gemma3")
    m = get_method("kn_easyedit")
    hp = load_hparams("kn_easyedit", m.Hparams, "tiny", {"steps": 4})
    before = lm.digest()
    edit = m.compute(lm, [REQ], hp)
    assert lm.digest() == before
    assert edit.diagnostics["answer_tokens"] and edit.diagnostics["removed_tokens"]
    json.dumps(edit.summary())


def test_results_carry_preset_adaptation_and_reference_fluency(tmp_home, corpus):
    from editcore.metrics import evaluate
    from editcore.metrics.fluency import REFERENCE_MAX_LEN, sample_tokens
    from editcore.text import prompt_ids

    lm = tiny.lm("gemma3")  # a post-norm family: MEMIT's adaptation applies
    case = Case(id="t", relation_id="", relation="", prompt=REQ.prompt, subject=REQ.subject, target_true="Paris",
                targets_new=("London",), neighbourhood=(Probe("Big Ben stands in", "London"),),
                generation_prompts=("The Louvre is", "Visitors to the Louvre", "A trip to Paris"))
    memit = get_method("memit")
    sizes = {"sentiment": 0, "piqa": 0, "qa": 0, "arithmetic": 0, "summarisation": 0}
    for preset in ("fast", "reference"):
        hp = load_hparams("memit", memit.Hparams, "tiny", {"preset": preset, "stats_corpus": corpus,
                                                           "stats_samples": 400, "v_num_grad_steps": 2})
        with lm.scope():
            edit = memit.compute(lm, [case.request()], hp)
        r = evaluate(lm, case, edit, families=("counterfact", "general"), suggest=0, general_sizes=sizes,
                     heldout_chars=0).to_dict()
        assert r["method"]["preset"] == preset and "norm" in r["method"]["adaptation"]
        g = r["families"]["general"]
        assert g["fluency_mode"] == ("reference" if preset == "reference" else "quick")
        assert len(g["fluency_texts_post"]) == (3 if preset == "reference" else 2)
    # ROME's lengths: prompt + continuation stop at 100 tokens; the same seed gives the same samples.
    rows = sample_tokens(lm, ["The Louvre is"], seed=3)
    assert len(prompt_ids(lm.tokenizer, "The Louvre is")) + len(rows[0]) <= REFERENCE_MAX_LEN
    assert sample_tokens(lm, ["The Louvre is"], seed=3) == rows
    pre_norm = tiny.lm("gpt2")
    hp = load_hparams("memit", memit.Hparams, "tiny", {"stats_corpus": corpus, "stats_samples": 400,
                                                       "v_num_grad_steps": 2})
    with pre_norm.scope():
        edit = memit.compute(pre_norm, [case.request()], hp)
    assert edit.diagnostics["adaptation"] == ""  # MEMIT as published on a pre-norm model


def test_catalog_split_is_disjoint_with_enough_known_facts():
    from editcore.catalog import known_facts, load_catalog
    from editcore.perfbench import split_part

    tune, report = split_part("tune"), split_part("report")
    assert not tune & report and tune | report == {c.id for c in load_catalog()}
    for model in ("gemma-3-270m", "smollm2-135m"):
        known = known_facts(model)
        assert len(known & tune) >= 50 and len(known & report) >= 50
    assert "P276:acropolis" in tune  # the facts the earlier sweeps tuned on stay out of the report


def test_cli_eval_runs_the_reference_preset(monkeypatch, capsys, tmp_home, corpus):
    from editcore.cli import main

    lm = tiny.lm("llama")
    monkeypatch.setattr("editcore.models.load_model", lambda name, progress=None: lm)
    rc = main(["eval", "tiny-llama", "--method", "rome", "--fact", "louvre", "--target", "London",
               "--preset", "reference", "--hparam", f"stats_corpus={corpus}", "--hparam", "v_num_grad_steps=1",
               "--hparam", "layer=1", "--families", "counterfact", "--json"])
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    assert data["edit"]["preset"] == "reference" and data["method"]["fluency"] == "reference"
    assert data["convention"] == "rome_mean_nll" and data["families"]["counterfact"]["other"]["convention"] == "product"
    assert any("100,000 Wikipedia" in w for w in data["edit"]["warnings"])


def test_bench_summary_has_intervals_and_romes_score():
    from editcore.perfbench import summarise

    judged = [{"es": 1.0, "ps": 1.0, "ns": 0.5, "es_product": 1.0, "ns_product": 0.5, "token_top1": 1.0,
               "neighbours_kept": 1.0},
              {"es": 1.0, "ps": 0.0, "ns": 1.0, "es_product": 0.0, "ns_product": 1.0, "token_top1": 0.0,
               "neighbours_kept": None}]
    s = summarise(judged)
    assert s["rates"]["ps"]["mean"] == 0.5 and s["rates"]["ps"]["lo"] <= 0.5 <= s["rates"]["ps"]["hi"]
    assert s["rates"]["neighbours_kept"]["n"] == 1
    assert s["score"] == pytest.approx(9 / 13)  # harmonic mean of ES 1, PS 1/2, NS 3/4


def test_bench_merge_replaces_only_the_new_rows_and_refuses_other_facts(tmp_path):
    from editcore.perfbench import to_markdown
    from editcore.perfbench_extras import merge_reports

    row = {"error": "old"}
    old = {"environment": {}, "models": [{"model": "m", "facts": ["a", "b"], "stats": {
        "layers": [], "tokens": 0, "corpus": "-", "seconds_total": 0, "seconds_per_layer_when_computed": {}},
        "methods": {"rome": dict(row), "ft": dict(row)}, "sections": [{"title": "kept", "rows": []}]}]}
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(old))
    stamp = {"at": "2026-12-03T15:00:00Z", "load_average_1min": 1.5}
    new = {"models": [{"model": "m", "facts": ["a", "b"], "methods": {"ft": {"error": "new", "measured": stamp}}}]}
    merged = merge_reports(path, new)
    got = merged["models"][0]
    assert got["methods"]["rome"] == row and got["methods"]["ft"]["error"] == "new"
    assert got["sections"] == [{"title": "kept", "rows": []}] and got["merged"] == {"ft": stamp}
    assert "merged in (`--merge`): ft at 2026-12-03T15:00:00Z, load average 1.5" in to_markdown(merged)
    other = {"models": [{"model": "n", "facts": ["x"], "methods": {"ft": {"error": "e", "measured": stamp}}}]}
    assert [m["model"] for m in merge_reports(path, other)["models"]] == ["m", "n"]
    new["models"][0]["facts"] = ["a", "c"]
    with pytest.raises(InputError, match="facts differ"):
        merge_reports(path, new)
    with pytest.raises(InputError, match="no .* to merge into"):
        merge_reports(tmp_path / "none.json", new)


def test_a_bench_cut_short_leaves_its_finished_rows(tmp_path, monkeypatch):
    from editcore import perfbench

    def two_rows_then_ctrl_c(name, *args, on_row=None, **kw):
        m = {"model": name, "facts": ["a"], "stats": {"layers": [], "tokens": 0, "corpus": "-", "seconds_total": 0,
                                                     "seconds_per_layer_when_computed": {}}, "methods": {}}
        for method in ("ft", "rome"):
            m["methods"][method] = {"error": "row", "measured": {"at": "t", "load_average_1min": 0.0}}
            on_row(m)
        raise KeyboardInterrupt

    monkeypatch.setattr(perfbench, "bench_model", two_rows_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        perfbench.run_bench(tmp_path, ["m"], 1, methods=["ft", "rome"])
    assert set(json.loads((tmp_path / "bench.json").read_text())["models"][0]["methods"]) == {"ft", "rome"}
