"""The dashboard's service layer on tiny random models: caching, isolation, restoring, sequential runs."""

import dataclasses
import threading

import pytest

import tiny
from editcore import service
from editcore.catalog import load_catalog
from editcore.service import edit, sequential
from editcore.errors import EditScopeError, InputError
from editcore.results_cache import ResultsCache, canonical_json, make_key

TINY_MEMIT = {"layers": [1, 2], "stats_samples": 2000}


@pytest.fixture(autouse=True, scope="module")
def _home(module_home):
    tiny.register_models()
    yield
    tiny.unregister_models()


@pytest.fixture(scope="module")
def lm():
    return tiny.lm("gpt2")


# ---- results cache ---------------------------------------------------------------------------------
def test_cache_keys_are_canonical_and_sensitive_to_every_part():
    base = dict(kind="edit", fingerprint="abc", method="rome", method_version="1", hparams={"a": 1, "b": [1, 2]},
                case={"id": "x"})
    k = make_key(**base)
    assert k == make_key(**{**base, "hparams": {"b": (1, 2), "a": 1}})  # order and tuple/list do not matter
    assert len(k) == 64
    for field, other in (("fingerprint", "abd"), ("method", "memit"), ("method_version", "2"),
                         ("hparams", {"a": 2, "b": [1, 2]}), ("case", {"id": "y"})):
        assert make_key(**{**base, field: other}) != k, field


def test_cache_stores_json_strings_only(tmp_path):
    cache = ResultsCache(str(tmp_path / "c"))
    back = cache.put("k", {"x": 1.5, "nan": float("nan"), "t": (1, 2)})
    assert back == {"x": 1.5, "nan": None, "t": [1, 2]}
    assert isinstance(cache._cache.get("k"), str)  # never a pickled object
    assert cache.get("k") == back
    cache._cache.set("evil", {"not": "a json string"})
    assert cache.get("evil") is None
    with pytest.raises(ValueError):
        canonical_json({"x": float("inf")})


def test_results_survive_a_new_cache_object(tmp_path):
    ResultsCache(str(tmp_path / "c")).put("k", {"v": [1, 2, 3]})
    assert ResultsCache(str(tmp_path / "c")).get("k") == {"v": [1, 2, 3]}


# ---- small pure helpers ----------------------------------------------------------------------------
def test_word_diff_marks_only_changed_words():
    segs = service.word_diff("is in Paris , France", "is in London , England")
    assert [s["text"] for s in segs if s["changed"]] == ["London", "England"]
    assert " ".join(s["text"] for s in segs) == "is in London , England"
    assert service.word_diff("same text", "same text") == [{"text": "same text", "changed": False}]


def test_scorecard_reads_nested_reports_and_leaves_missing_values_empty():
    report = {"families": {"counterfact": {"es": {"mean": 1.0, "n": 1}, "ps": {"mean": 0.0, "n": 0}},
                           "portability": {"a": {"token_acc": {"mean": 1.0, "n": 1}},
                                           "b": {"token_acc": {"mean": 0.0, "n": 3}}}},
              "counterfact_pre": {"es": {"mean": 0.0, "n": 1}}}
    card = service.scorecard({"report": report, "seconds": {"edit": 2.5}})
    assert card["efficacy"] == 1.0 and card["efficacy_pre"] == 0.0 and card["seconds"] == 2.5
    assert card["generalisation"] is None  # no paraphrases: no number, not a zero
    assert card["nkl"] is None
    assert card["portability"] == 0.25  # pooled over probes, not a mean of set means
    # Families that did not run at all are "not computed", unlike a family that ran without data.
    assert service.not_computed({"report": report}) == {"nkl", "fluency", "perplexity"}


def test_quick_evaluation_skips_general_and_has_its_own_cache_key(lm):
    full, quick = service.evaluation_families(False), service.evaluation_families(True)
    assert "general" in full and quick == [f for f in full if f != "general"]
    case = service.resolve_case({"source": "catalog", "id": "P276:louvre"})
    keys = {service.edit_key(lm, case, "memit", "1", TINY_MEMIT, fams) for fams in (full, quick)}
    assert len(keys) == 2


# ---- models and generation -------------------------------------------------------------------------
def test_tiny_models_only_while_registered():
    assert service.default_model() == "tiny-gpt2"
    assert service.model_choices()[:3] == ["tiny-gpt2", "tiny-llama", "tiny-gemma3"]
    assert service.load_model("tiny-llama").name == "tiny-llama"
    tiny.unregister_models()
    try:
        assert "tiny-gpt2" not in service.model_choices()
        assert service.default_model() == "gemma-3-270m"
        with pytest.raises(EditScopeError, match="unknown model 'tiny-gpt2'"):
            service.load_model("tiny-gpt2")
    finally:
        tiny.register_models()


def test_generate_waits_for_a_running_edit_and_says_so(lm):
    held, release = threading.Event(), threading.Event()

    def other_session():
        with lm.scope():  # another session's edit holds the model
            held.set()
            release.wait(10)

    t = threading.Thread(target=other_session)
    t.start()
    held.wait(10)
    seen = []

    def progress(stage, frac):
        seen.append(stage)
        release.set()  # the other session finishes once we have said that we wait

    out = service.generate(lm, "The Louvre is", 3, progress=progress)
    t.join()
    assert seen[0] == service.WAITING_MESSAGE
    assert isinstance(out["continuation"], str)


def test_bad_inputs_are_user_errors(lm):
    with pytest.raises(InputError):
        service.generate(lm, "", 5)
    with pytest.raises(InputError):
        service.generate(lm, "x", 0)
    with pytest.raises(InputError, match="equals the current answer"):
        service.resolve_case({"source": "free", "prompt": "The Louvre is in", "subject": "The Louvre",
                              "target_true": "Paris", "target_new": " paris"}, lm)
    with pytest.raises(InputError, match="subject is empty"):
        service.resolve_case({"source": "free", "prompt": "x is in", "subject": " ", "target_new": "y"}, lm)
    with pytest.raises(InputError):
        service.sequential_config(["memit"], 101)
    with pytest.raises(InputError):
        service.method_hparams("memit", "tiny-gpt2", {"v_lr": -1.0})


def test_free_form_fact_without_old_answer_takes_the_models_own_answer(lm):
    case = service.resolve_case({"source": "free", "prompt": "The Louvre is located in", "subject": "The Louvre",
                                 "target_new": "zzzz"}, lm)
    assert case.prompt == "{} is located in"
    assert case.target_true  # filled from greedy decoding



def test_a_catalog_fact_takes_any_new_target():
    base = service.resolve_case({"source": "catalog", "id": "P276:louvre"})
    assert "London" not in base.targets_new  # the README's demo target is not a catalog target
    free = service.resolve_case({"source": "catalog", "id": "P276:louvre", "target_new": " London "})
    assert free.target_new == "London" and free.targets_new[1:] == base.targets_new
    assert free.paraphrases == base.paraphrases and free.neighbourhood == base.neighbourhood
    assert not free.one_hop_for("London")
    assert "Big Ben" in free.related_words("London")  # borrowed from the catalog fact that lists them
    own = service.resolve_case({"source": "catalog", "id": "P276:louvre", "target_new": base.targets_new[1].lower()})
    assert own.target_new == base.targets_new[1] and sorted(own.targets_new) == sorted(base.targets_new)
    assert service.is_case_target({"targets_new": list(base.targets_new)}, base.targets_new[1].upper())
    assert not service.is_case_target({"targets_new": list(base.targets_new)}, "London")
    with pytest.raises(InputError, match="equals the current answer"):
        service.resolve_case({"source": "catalog", "id": "P276:louvre", "target_new": base.target_true})
    with pytest.raises(InputError, match="empty"):
        service.resolve_case({"source": "catalog", "id": "P276:louvre", "target_new": "  "})

# ---- sequential runs -------------------------------------------------------------------------------
def test_sequential_run_restores_the_model_and_is_cached(lm):
    before = lm.digest()
    cfg = service.sequential_config(["memit"], 3, "catalog", seed=1, every=1, overrides={"memit": TINY_MEMIT})
    updates = []
    out = service.sequential_run(lm, cfg, on_update=lambda r: updates.append(len(r["runs"]["memit"]["points"])))
    assert lm.digest() == before
    run = out["runs"]["memit"]
    assert run["complete"] and [p["n_edits"] for p in run["points"]] == [0, 1, 2, 3]
    assert run["points"][0]["weight_drift"] == 0.0
    drifts = [p["weight_drift"] for p in run["points"]]
    assert all(b > 0 for b in drifts[1:])
    assert all(0.0 <= p["retention"] <= 1.0 for p in run["points"][1:])
    assert 0.0 <= run["points"][0]["neighbourhood_score"] <= 1.0
    # The general-ability curves are measured at every point (the walk-through found them missing).
    for p in run["points"]:
        assert p["perplexity"] is not None and p["perplexity"] > 1.0
        # The tiny model's context is too short for the few-shot probes, which are then skipped (None, not 0).
        assert "probe_accuracy" in p and (p["probe_accuracy"] is None or 0.0 <= p["probe_accuracy"] <= 1.0)
    assert updates == [2, 3, 4, 4]
    stored = service.sequential_cached(lm, cfg)
    assert stored["runs"]["memit"]["points"] == run["points"]
    # Different seed: different facts, nothing stored yet.
    assert service.sequential_cached(lm, {**cfg, "seed": 2}) is None


def test_a_stopped_sequential_run_keeps_what_it_measured_and_restores(lm):
    before = lm.digest()
    cfg = service.sequential_config(["memit"], 4, "catalog", seed=3, every=1, overrides={"memit": TINY_MEMIT})
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] > 2  # stop before the third edit

    out = service.sequential_run(lm, cfg, should_stop=stop)
    run = out["runs"]["memit"]
    assert not run["complete"] and run["stopped_after"] == 2
    assert [p["n_edits"] for p in run["points"]] == [0, 1, 2]
    assert lm.digest() == before
    assert service.sequential_cached(lm, cfg)["runs"]["memit"]["complete"] is False


def test_a_failing_sequential_run_restores_the_model(lm, monkeypatch):
    before = lm.digest()
    cfg = service.sequential_config(["memit"], 3, "catalog", seed=5, every=1, overrides={"memit": TINY_MEMIT})
    real = sequential._seq_point
    calls = {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("boom")
        return real(*a, **k)

    monkeypatch.setattr(sequential, "_seq_point", flaky)
    with pytest.raises(RuntimeError):
        service.sequential_run(lm, cfg)
    assert lm.digest() == before
    # What was measured before the failure is stored, with how many edits had been applied.
    stored = service.sequential_cached(lm, cfg)["runs"]["memit"]
    assert not stored["complete"] and stored["stopped_after"] == 2
    assert [p["n_edits"] for p in stored["points"]] == [0, 1]


def test_a_typed_target_borrows_related_words_from_the_catalog():
    """Louvre -> London (London is not one of the Louvre fact's targets): London's related words come from
    the catalog fact that lists them, so the Big Ben view has words a person would pick."""
    louvre = next(c for c in load_catalog() if c.id == "P276:louvre")
    assert not louvre.related_words("London")
    case = service.with_new_target(louvre, "London")
    assert case.targets_new[0] == "London"
    assert "Big Ben" in case.related_words("London")
    assert case.related_words("Paris") == louvre.related_words("Paris")
    assert service.catalog_related_words("no such word at all") == ()


def test_distracting_prompts_are_kept_only_for_the_target_they_name():
    """A dataset's distracting prompts ("{edit prompt} {first target}. {neighbour}") name its first new target:
    choosing another target drops them (the metrics then build them for the chosen one)."""
    base = next(c for c in load_catalog() if len(c.targets_new) > 1)
    case = dataclasses.replace(base, distracting_neighbourhood=("a distracting prompt",))
    assert service.with_new_target(case, case.targets_new[0]).distracting_neighbourhood == ("a distracting prompt",)
    assert service.with_new_target(case, case.targets_new[1]).distracting_neighbourhood == ()
    assert service.with_new_target(case, "Some other word").distracting_neighbourhood == ()


def test_a_fact_edited_again_reads_the_unedited_model_from_the_cache(lm, monkeypatch, tmp_path):
    """Compare runs several methods on one fact: the unedited model's continuations are generated once
    (pre-edit cache), the edited model's every time."""
    from editcore import decoding
    from editcore.metrics import scoring

    scoring.clear_cache(disk=False)
    calls = []
    real = decoding.greedy_tokens

    def spy(lm_, prompts, *args, **kwargs):
        calls.append(tuple(prompts))
        return real(lm_, prompts, *args, **kwargs)

    monkeypatch.setattr(decoding, "greedy_tokens", spy)
    spec = {"source": "catalog", "id": "P276:louvre"}
    gens = {p for _, p in edit._generation_prompts(service.resolve_case(spec, lm))}

    def generating_gens():
        return sum(gens <= set(c) for c in calls)

    cache = ResultsCache(str(tmp_path / "c"))
    first = service.run_edit(lm, spec, "ft", cache=cache, quick=True)
    assert generating_gens() == 2  # before and after the edit
    calls.clear()
    second = service.run_edit(lm, spec, "ft_l", cache=cache, quick=True)
    assert generating_gens() == 1  # after the edit only
    assert [g["pre"] for g in first["generations"]] == [g["pre"] for g in second["generations"]]


def test_run_edit_uses_the_cache_it_is_given_even_when_empty(lm, tmp_path):
    """An empty ResultsCache has len 0: run_edit must still write to it, not fall back to the default one."""
    given = ResultsCache(str(tmp_path / "given"))
    service.run_edit(lm, {"source": "catalog", "id": "P276:louvre"}, "ft", cache=given, quick=True)
    assert len(given) == 1
