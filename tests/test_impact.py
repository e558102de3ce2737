"""Impact scan (editcore.metrics.impact, service.impact) and free-form neighbourhoods on tiny models."""

import pytest
import torch

import tiny
from editcore import service, text
from editcore.errors import InputError
from editcore.metrics import impact
from editcore.results_cache import ResultsCache

LOUVRE = {"source": "free", "prompt": "The Louvre is located in the city of", "subject": "The Louvre",
          "target_true": "Paris", "target_new": "London"}


pytestmark = pytest.mark.usefixtures("module_home")


@pytest.fixture(scope="module")
def lm():
    return tiny.lm("gpt2")


@pytest.fixture(scope="module")
def edited(lm, tmp_path_factory):
    cache = ResultsCache(str(tmp_path_factory.mktemp("cache")))
    return service.run_edit(lm, LOUVRE, "ft_l", cache=cache, quick=True), cache


@pytest.mark.parametrize("family", ["gpt2", "llama", "gemma3"])
def test_prefix_shared_forward_gives_the_plain_forwards_states(family):
    m = tiny.lm(family)
    prompts = ["The Louvre is located in", "The Louvre is in Paris", "The Louvre stands in", "Big Ben",
               "Big Ben stands in London", "The capital of Japan is", "The"]
    seqs = [text.prompt_ids(m.tokenizer, p) for p in prompts]
    with m.scope():
        shared = impact.last_hidden(m, seqs, batch_rows=3)
        plain = torch.stack([text.hidden_at(m, [s], [[len(s) - 1]])[0][0] for s in seqs])
    assert torch.allclose(shared, plain, atol=1e-5, rtol=1e-4)


def test_impact_kl_equals_the_nkl_metric_on_the_prompts_they_share(lm, edited):
    result, cache = edited
    nkl = result["report"]["families"]["nkl"]
    assert nkl["prompts"], "the free-form fact got no neighbourhood"
    scan = service.impact_scan(lm, result, catalog=False, cache=cache)
    by_prompt = {r["prompt"]: r for r in scan["rows"]}
    shared = [(p, v) for p, v in zip(nkl["prompts"], nkl["per_prompt"]) if p in by_prompt]
    assert len(shared) == len(nkl["prompts"])
    for p, v in shared:
        assert by_prompt[p]["kl"] == pytest.approx(v, rel=1e-3, abs=1e-6), p
    assert by_prompt[LOUVRE["prompt"]]["source"] == "this fact · edit prompt"


def test_the_scan_covers_the_catalog_caches_the_unedited_side_and_its_result(lm, edited, monkeypatch):
    from editcore.catalog import load_catalog

    result, cache = edited
    catalog = impact.part_of_cases("catalog", load_catalog())
    assert len(catalog.prompts) > 2000
    assert not impact.is_cached(lm, catalog)
    views = []
    scan = service.impact_scan(lm, result, texts=["My favourite city is"], cache=cache, on_chunk=views.append)
    assert impact.is_cached(lm, catalog)
    assert len(scan["rows"]) >= len(catalog.prompts) and scan["prompts_per_second"] > 0
    assert [p["name"] for p in scan["parts"]] == ["this fact", "yours", "catalog"]
    assert any(r["source"] == "typed by you" for r in scan["rows"])
    # Streamed: the view grows chunk by chunk and ends with every prompt.
    assert len(views) >= 2 and views[0]["scanned"] < views[-1]["scanned"] == len(scan["rows"])
    assert all(r["kl"] >= 0 for r in scan["rows"])
    assert len(scan["top"]) == service.impact.TOP and all({"before", "after"} <= set(t) for t in scan["top"])
    # The ranking puts the largest KL first; flips are counted.
    view = service.impact.impact_view(scan["rows"], len(scan["rows"]), True)
    kls = [r["kl"] for r in view["ranked"]]
    assert kls == sorted(kls, reverse=True) and view["summary"]["n"] == len(kls)
    assert view["summary"]["flipped"] == sum(r["flipped"] for r in scan["rows"])
    # The same scan again comes from the results cache, and the unedited side is never read again.
    monkeypatch.setattr(impact, "last_hidden", lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed")))
    again = service.impact_scan(lm, result, texts=["My favourite city is"], cache=cache)
    assert again["cached"] and again["rows"] == scan["rows"]
    assert service.impact_cached(lm, result, texts=["My favourite city is"], cache=cache)["rows"] == scan["rows"]


def test_a_scan_leaves_the_model_as_it_found_it_and_recomputes_a_forgotten_patch(lm, edited, monkeypatch):
    result, cache = edited
    before = lm.digest()
    monkeypatch.setattr(service.edit, "_PATCHES", type(service.edit._PATCHES)())
    scan = service.impact_scan(lm, result, catalog=False, cache=ResultsCache(str(cache.directory) + "-2"))
    assert scan["edit_recomputed"] and lm.digest() == before
    first = service.impact_scan(lm, result, catalog=False, cache=cache)
    assert [r["kl"] for r in scan["rows"]] == pytest.approx([r["kl"] for r in first["rows"]], rel=1e-4, abs=1e-7)


def test_free_form_fact_gets_a_neighbourhood_from_the_catalog_with_sources(lm, edited):
    result, _ = edited
    assert result["free_form"]["relation"] == "P276" and result["free_form"]["relation_source"] == "recognised"
    rows = result["neighbourhood"]
    assert rows and all(r["answer"] == "Paris" and r["source"].startswith("catalog") for r in rows)
    assert all("is located in the city of" in r["prompt"] and "Louvre" not in r["prompt"] for r in rows)
    assert result["report"]["families"]["nkl"]["distracted_prompts"]  # CounterFact+ variants, built by NKL
    assert service.scorecard(result)["neighbourhood"] is not None


def test_an_edited_neighbour_list_is_used_as_given(lm, tmp_path):
    spec = {**LOUVRE, "neighbours": [{"prompt": "Big Ben stands in", "answer": "London"},
                                     {"prompt": "The Eiffel Tower is located in the city of"},
                                     {"prompt": "  "}]}
    result = service.run_edit(lm, spec, "ft_l", cache=ResultsCache(str(tmp_path / "c")), quick=True)
    rows = result["neighbourhood"]
    assert [r["prompt"] for r in rows] == ["Big Ben stands in", "The Eiffel Tower is located in the city of"]
    assert rows[0]["answer"] == "London" and rows[1]["answer"]  # a blank answer is the model's own
    assert all(r["source"] == "typed by you" for r in rows)
    assert result["report"]["families"]["nkl"]["prompts"] == [r["prompt"] for r in rows]


def test_the_old_answer_is_the_models_own_unless_typed_and_a_typed_one_it_does_not_give_is_flagged(lm, tmp_path):
    cache = ResultsCache(str(tmp_path / "c"))
    own = service.free_form_preview(lm, "The Louvre is located in", "The Louvre")
    assert own["model_answer"] and own["old_answer_source"] == "model" and own["typed_is_models"] is None
    spec = {k: v for k, v in LOUVRE.items() if k != "target_true"}
    with pytest.raises(InputError, match="type the current answer"):  # tiny gpt2 writes ",,,," here
        service.run_edit(lm, {**spec, "target_new": "zzzq"}, "ft_l", cache=cache, quick=True)
    spec["prompt"] = "The Louvre is located in"  # ... and " in in in" here
    result = service.run_edit(lm, {**spec, "target_new": "zzzq"}, "ft_l", cache=cache, quick=True)
    assert result["request"]["target_true"] == result["free_form"]["model_answer"]
    typed = service.free_form_preview(lm, "The Louvre is located in", "The Louvre", "Quux")
    assert typed["typed_is_models"] is False and typed["p_typed"] is not None
    result = service.run_edit(lm, {**spec, "target_true": "Quux", "target_new": "zzzq"}, "ft_l", cache=cache,
                              quick=True)
    assert result["request"]["target_true"] == "Quux"
    assert any("does not answer 'Quux'" in n for n in result["fact_notes"])
    assert service.free_form_preview(lm, "The Louvre is located in", "")["error"] == "the subject is empty"


def test_the_result_streams_in_stages(lm, tmp_path):
    seen = []
    service.run_edit(lm, LOUVRE, "ft_l", cache=ResultsCache(str(tmp_path / "c")), quick=True,
                     on_stage=lambda name, r: seen.append((name, set(r))))
    assert [n for n, _ in seen] == ["edit", "scorecard", "views"]
    assert "probabilities" in seen[0][1] and "generations" not in seen[0][1]
    assert "generations" in seen[1][1]


def test_a_cached_request_is_found_without_computing(lm, edited):
    result, cache = edited
    assert service.cached_edit(lm, LOUVRE, "ft_l", quick=True, cache=cache)["key"] == result["key"]
    assert service.cached_edit(lm, {**LOUVRE, "target_new": "Rome"}, "ft_l", quick=True, cache=cache) is None


def test_a_template_near_the_threshold_is_recognised_when_the_relation_has_its_answer():
    """The README's example: "hangs in a museum in the city of" is a weak match for the location relation's
    templates on words alone; the old answer (Paris, a location answer in the catalog) settles it, and
    without an answer nothing is claimed."""
    from editcore import neighbours as nb

    template = "{} hangs in a museum in the city of"
    assert nb.recognise_relation(template) == []
    ranked = nb.recognise_relation(template, "Paris")
    assert ranked[0]["relation"] == "P276" and ranked[0]["has_answer"]
    assert nb.MATCH_THRESHOLD > ranked[0]["score"] >= nb.ANSWER_THRESHOLD
    assert nb.recognise_relation("My favourite food is {}", "pizza") == []
