"""The survey's reproduction and sequential editing at scale, on tiny random models (numbers are noise;
the tests check restoring, bookkeeping, collapse, resume, every table cell, and engine equality)."""

import dataclasses
import functools
import json
import math
import re

import pytest
import torch

import tiny
from editcore.cases import Case, Probe
from editcore.errors import InputError
from editcore.methods import get_method
from editcore.paths import shared_data
from editcore.reproduce import ReproConfig, SeqConfig, reproduce, sequential_run
from editcore.reproduce import report as rep
from editcore.reproduce import sequential as seq
from editcore.reproduce.engine import InProcessEngine, make_engine
from editcore.scope import param_digest

FT = {"steps": 2, "layer": 1}
NO_PROBES = {"sentiment": 0, "piqa": 0, "qa": 0, "arithmetic": 0, "summarisation": 0}


pytestmark = pytest.mark.usefixtures("module_home")


@pytest.fixture(scope="module")
def lm():
    return tiny.lm("gpt2")


def _cases(n, prefix="c"):
    words = ["Paris", "London", "Tokyo", "Rome", "Berlin", "France", "Japan", "Italy", "Germany", "English"]
    subjects = ["The Louvre", "Big Ben", "The Colosseum", "Windows", "The Eiffel Tower", "Danielle Darrieux",
                "The capital", "Berlin", "The Thames", "The piano", "The guitar", "Spanish"]
    return [Case(id=f"{prefix}{i}", relation_id="P0", relation="r", prompt="{} is located in", subject=subjects[i],
                 target_true=words[i % 10], targets_new=(words[(i + 3) % 10],),
                 neighbourhood=(Probe(f"{subjects[(i + 1) % 12]} is located in", words[(i + 5) % 10]),))
            for i in range(n)]


def _cfg(n, **kw):
    return SeqConfig(**{"method": "ft", "n_edits": n, "every": 1, "overrides": FT, "probe_sizes": NO_PROBES,
                        "heldout_chars": 200, **kw})


# ---- sequential editing at scale ------------------------------------------------------------------
def test_kept_edits_are_measured_and_the_model_comes_back_bit_identical(lm):
    before = param_digest(lm.model)
    run = sequential_run(lm, _cases(4), _cfg(4, every=2), use_cache=False)
    assert param_digest(lm.model) == before
    assert run["complete"] and run["collapsed"] is None
    assert [p["n_edits"] for p in run["points"]] == [0, 2, 4]
    assert run["points"][0]["weight_drift"] == 0.0 and run["points"][-1]["weight_drift"] > 0
    assert run["points"][0]["nkl"] == pytest.approx(0.0, abs=1e-7)
    for p in run["points"][1:]:
        assert 0.0 <= p["retention"] <= 1.0 and math.isfinite(p["perplexity"]) and p["nkl"] >= 0


def test_an_interrupted_run_restores_the_model_and_keeps_what_it_measured(lm, monkeypatch, tmp_path):
    method = get_method("ft")
    real = method.compute
    calls = {"n": 0}

    def interrupted(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(method, "compute", interrupted)
    before = param_digest(lm.model)
    cases, cfg = _cases(4, "k"), _cfg(4)
    with pytest.raises(KeyboardInterrupt):
        sequential_run(lm, cases, cfg)
    assert param_digest(lm.model) == before
    stored = seq.default_cache().get(seq.run_key(lm, cfg, method, seq.hparams_of(method, lm, cfg), cases))
    assert stored["stopped_after"] == 2 and [p["n_edits"] for p in stored["points"]] == [0, 1, 2]
    from editcore.reproduce.seqreport import write_sequential

    paths = write_sequential(lm.name, "constructed", {"ft": stored}, tmp_path)
    md = paths["md"].read_text()
    assert "| 2 | " in md and "complete: False" in md and paths["html"].is_file()
    assert json.loads(paths["figure_json"].read_text())["figure"]["data"]


def test_retention_counts_the_edits_whose_prompt_gives_the_new_target(lm):
    from editcore.decoding import greedy

    # Constructed without editing: case 0's "new" target is the unedited model's own next token (so it is
    # retained), case 1's is a token the model does not put first.
    prompt = "The Louvre is located in"
    own = greedy(lm, [prompt], max_new_tokens=1)[0]
    assert own.strip()
    vocab = [lm.tokenizer.decode([i]) for i in range(lm.tokenizer.vocab_size)]
    other = next(w for w in vocab if w.strip().isalpha() and w != own)
    base = _cases(2)
    cases = [dataclasses.replace(base[0], targets_new=(own,)), dataclasses.replace(base[1], targets_new=(other,))]
    from editcore.text import score_targets

    expected = [all(s.token_correct) for s in score_targets(lm, [c.edit_prompt for c in cases],
                                                              [c.target_new for c in cases])]
    assert expected[0] is True
    probe = seq._Probe(lm, cases, _cfg(2, heldout_chars=0))
    probe.point(0, {}, first=True)
    point = probe.point(2, {}, first=False)
    assert point["retention"] == pytest.approx(sum(expected) / 2)
    assert point["last_edit_top1"] == float(expected[1])


def test_a_non_finite_update_stops_the_run_cleanly(lm, monkeypatch):
    method = get_method("ft")
    real = method.compute
    calls = {"n": 0}

    def poisoned(lm_, requests, hp, progress=None, **kw):
        calls["n"] += 1
        edit = real(lm_, requests, hp, progress, **kw)
        if calls["n"] == 3:
            edit.patch.deltas.update({k: torch.full_like(v, float("nan")) for k, v in edit.patch.deltas.items()})
        return edit

    monkeypatch.setattr(method, "compute", poisoned)
    before = param_digest(lm.model)
    run = sequential_run(lm, _cases(5), _cfg(5), use_cache=False)
    assert param_digest(lm.model) == before
    assert run["collapsed"] == {"after": 2, "reason": "edit 3 produced a non-finite update; not applied"}
    assert [p["n_edits"] for p in run["points"]] == [0, 1, 2]
    assert calls["n"] == 3  # nothing was computed after the stop


def test_collapse_rules():
    probe = seq._Probe.__new__(seq._Probe)
    probe.cfg, probe.ppl0 = _cfg(2, collapse_factor=5.0), 10.0
    assert probe.collapse({"perplexity": 49.0, "nkl": 0.1}) is None
    assert "perplexity 51.0 > 5 x unedited 10.0" == probe.collapse({"perplexity": 51.0})
    assert probe.collapse({"perplexity": 12.0, "nkl": math.nan}) == "non-finite nkl"


def test_chunks_respect_evaluation_points_and_batches():
    assert seq._chunks([0, 3, 6], 6, 4) == [(0, 3), (3, 6)]
    assert seq._chunks([0, 3, 6], 6, 2) == [(0, 2), (2, 3), (3, 5), (5, 6)]
    assert seq._chunks([0, 2], 5, 1) == [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]


def test_config_is_validated():
    with pytest.raises(InputError):
        _cfg(0)
    with pytest.raises(InputError):
        _cfg(3, every=4)
    with pytest.raises(InputError):
        _cfg(3, steps=(0, 5))
    assert _cfg(10, steps=(10, 0, 5)).points() == [0, 5, 10]
    assert _cfg(7, every=3).points() == [0, 3, 6, 7]


def test_a_stopped_run_resumes_from_its_last_point(lm):
    cases, cfg = _cases(4, "r"), _cfg(4)
    full = sequential_run(lm, cases, dataclasses.replace(cfg, collapse_factor=50.0), use_cache=False)
    asked = {"n": 0}

    def stop():
        asked["n"] += 1
        return asked["n"] > 2  # two edits, then stop

    before = param_digest(lm.model)
    part = sequential_run(lm, cases, cfg, should_stop=stop)
    assert part["stopped_after"] == 2 and not part["complete"]
    assert param_digest(lm.model) == before
    assert seq.cached_run(lm, cases, cfg)["stopped_after"] == 2  # what --report-only shows
    assert seq.cached_run(lm, cases, dataclasses.replace(cfg, every=2)) is None
    rest = sequential_run(lm, cases, cfg)
    assert rest["resumed_from"] == 2 and rest["complete"]
    assert param_digest(lm.model) == before
    assert [p["n_edits"] for p in rest["points"]] == [0, 1, 2, 3, 4]
    for a, b in zip(full["points"], rest["points"]):
        for k in ("retention", "neighbourhood_score", "perplexity", "nkl", "weight_drift"):
            if a.get(k) is not None:
                assert b[k] == pytest.approx(a[k], rel=1e-4, abs=1e-6), k
    assert sequential_run(lm, cases, cfg)["resumed_from"] == 2  # now a complete cached result


# ---- the reproduction ------------------------------------------------------------------------------
needs_data = pytest.mark.skipif(not shared_data().is_dir(), reason=f"no shared data at {shared_data()}")
SMALL = {"qa": 2, "sentiment": 2, "arithmetic": 2, "summarisation": 1, "piqa": 0}


def _repro(methods=("ft", "ike"), experiments=None, **kw):
    return ReproConfig(methods=methods, cases=2, figure4_steps=(0, 1, 2), figure4_sizes=SMALL,
                       overrides={"ft": FT}, **({"experiments": experiments} if experiments else {}), **kw)


def _table_cells(md: str, header: str) -> list[list[str]]:
    block = md.split(header, 1)[1].split("\n\n", 2)[1]
    rows = [r.strip("|").split(" | ") for r in block.splitlines()[2:]]
    return [[c.strip() for c in r] for r in rows]


@needs_data
def test_every_cell_is_a_number_or_an_explicit_na_with_its_reason(lm, tmp_path):
    before = param_digest(lm.model)
    result = reproduce(InProcessEngine(lm), _repro())
    assert param_digest(lm.model) == before
    assert result["complete"] and result["cached_units"] == 0
    assert all("catalog" not in s for s in result["sources"].values())  # the public files were read
    md = rep.markdown(result)
    number = re.compile(r"^-?\d+\.\d+( \[-?\d+\.\d+, -?\d+\.\d+\])? \(n=\d+\)$")
    for header in ("## Table 3", "## Table 4"):
        rows = _table_cells(md, header)
        assert [r[0] for r in rows] == ["FT", "IKE"]
        for r in rows:
            for cell in r[1:-1]:
                assert number.match(cell) or re.match(r"^n/a — \S", cell), cell
            assert r[-1] == "not transcribed ¹"
    ike = _table_cells(md, "## Table 3")[1]  # registered: a number, or n/a with its reason (the tiny context)
    assert not any("not registered" in c for c in ike) and any(number.match(c) for c in ike[1:-1]), ike
    ft3 = _table_cells(md, "## Table 3")[0]
    # Every Table 3 column has data for FT, except multi-hop: MQuAKE's few-shot prompt does not fit the tiny
    # model's 128-token context, and the cell must say so.
    assert all(number.match(c) for i, c in enumerate(ft3[1:-1]) if i != 3)
    assert number.match(ft3[4]) or ("n/a — error" in ft3[4] and "context" in ft3[4])
    assert "## Findings" in md and "IKE best on single-edit portability — cannot be tested here" in md
    series = rep.figure4_series(result, "ft")
    assert [p[0] for p in series["qa"]] == [0, 1, 2]
    paths = rep.write_report(result, tmp_path)
    csv_text = paths["csv"].read_text()
    assert csv_text.startswith("table,column,method") and "figure4,NQ,ft,2," in csv_text
    page = paths["html"].read_text()
    assert "Plotly.newPlot" in page and "NQ (exact match)" in page
    # resumable: the same command again reads every unit from the cache
    again = reproduce(InProcessEngine(lm), _repro())
    # (a unit that failed is not cached: the next run tries it again)
    assert again["cached_units"] == sum("na" not in u["row"] for u in result["units"]) > 0
    assert rep.markdown({**again, "seconds": result["seconds"], "cached_units": 0}) == md


def test_unknown_experiments_and_bad_steps_are_input_errors():
    with pytest.raises(InputError):
        ReproConfig(experiments=("nope",))
    with pytest.raises(InputError):
        ReproConfig(figure4_steps=(0,))
    with pytest.raises(InputError):
        make_engine("spark")


def test_the_cli_says_one_line_for_bad_input(capsys):
    from editcore.cli import main

    assert main(["reproduce", "tiny", "--figure4-steps", "a,b"]) == 2
    assert "error: --figure4-steps" in capsys.readouterr().err


# ---- Ray ---------------------------------------------------------------------------------------------
@needs_data
def test_ray_engine_gives_the_in_process_results(lm):
    ray = pytest.importorskip("ray", reason="ray is an optional extra (pip install -r requirements-ray.txt)")
    cfg = _repro(methods=("ft",), experiments=("subject_replace", "conflict_reverse", "roundedit", "figure4"))
    local = reproduce(InProcessEngine(lm), cfg, use_cache=False)
    engine = make_engine("ray", factory=functools.partial(tiny.lm, "gpt2"), workers=2, local_cpus=2)
    try:
        assert engine.describe()["fingerprint"] == lm.fingerprint
        remote = reproduce(engine, cfg, use_cache=False)
    finally:
        engine.close()
    assert not ray.is_initialized()
    assert remote["engine"] == "ray" and remote["workers"] == 2
    assert len(remote["units"]) == len(local["units"])
    for a, b in zip(local["units"], remote["units"]):
        assert (a["experiment"], a["method"], a["case"]) == (b["experiment"], b["method"], b["case"])
        _close(a["row"], b["row"])


def _close(a, b):
    """Equal up to float noise (workers run with their own thread count, so sums may differ in the last bits)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _close(a[k], b[k])
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _close(x, y)
    elif isinstance(a, float):
        assert b == pytest.approx(a, rel=1e-5, abs=1e-7)
    else:
        assert a == b


def test_a_method_whose_training_is_missing_becomes_an_explained_na(lm, monkeypatch):
    import editcore.methods as registry
    from editcore.reproduce.engine import run_unit_safe

    class Untrained:
        name = "mend"
        needs_training = True
        info = get_method("ft").info

        def trained(self, lm_):
            return None

    monkeypatch.setattr(registry, "get_method", lambda name: Untrained())
    row = run_unit_safe(lm, {"experiment": "one_hop", "method": "mend", "kind": "case", "case": {}})
    assert row == {"na": f"mend needs training first (python -m editcore train mend {lm.name})"}


def test_grid_axis_domains_stay_inside_the_figure():
    from editcore.reproduce.figures import Grid

    layout = Grid(2, 3, [str(i) for i in range(6)], "t", 100, 100).layout
    ends = [x for k, v in layout.items() if k.startswith(("xaxis", "yaxis")) for x in v["domain"]]
    assert ends and all(0.0 <= x <= 1.0 for x in ends)
