"""KE and MALMEN share MEND's training machinery (the resume test covers MEND too): a few steps lower the edit loss, the artefact is written,
used by compute and resumable, the bench's facts are held out, and without an artefact compute says how to
get one (as MEND does)."""

import pytest
import torch

import tiny
from editcore.errors import InputError
from editcore.methods import get_method
from editcore.methods.base import load_hparams
from editcore.methods.mend import store
from editcore.methods.mend.training import edit_losses
from editcore.types import Request

pytestmark = pytest.mark.usefixtures("tmp_home")

METHODS = ("ke", "malmen")
REQ = Request("{} is located in the city of", "The Louvre", "London", "Paris")
# Settings that learn within a few steps on a random model: a large outer learning rate, no locality pull
# (KE: a margin the KL never reaches, a fixed multiplier), and for MALMEN a small starting ridge term, since a
# random model's MLP keys are tiny (|k|^2 ~ 1e-3) and the paper's lambda = 1 would swamp them.
LEARN = {"ke": {"lr": 1e-2, "lr_alpha": 0.0, "margin_kl": 10.0},
         "malmen": {"lr": 3e-2, "lr_lr": 3e-3, "edit_lr": 1e-2, "init_lambda": 1e-4, "cloc": 0.0}}


@pytest.mark.parametrize("name", METHODS)
def test_a_short_training_run_lowers_the_edit_loss(name):
    lm = tiny.lm("llama")
    m = get_method(name)
    thp = tiny.training_hparams(m, steps=20, batch_edits=4, val_every=20, checkpoint_every=100, **LEARN[name])
    tr = m.trainer(lm, thp, m.targets(lm, thp), m._data(lm, thp), "probe")
    tr.prime_norms()
    fixed = [d for s in range(3) for d in tr.draws(s)]

    def edit_nll():
        with lm.scope(), torch.no_grad():
            return edit_losses(lm, fixed, tr.net.targets, tr.transform(), answer_only=tr.answer_only)[2]["edit_nll"]

    before = edit_nll()
    for _ in range(thp.steps):
        tr.run_step()
    after = edit_nll()
    # The measurement is deterministic (fixed edits, no dropout), so any drop is the training's; these runs
    # drop by about 0.09 (KE) and 0.11 (MALMEN) nats from ~5.6.
    assert after < before - 0.05, (before, after)


@pytest.mark.parametrize("name", METHODS)
def test_compute_without_a_trained_network_says_how_to_train(name):
    from editcore.service.choices import training_status

    lm = tiny.lm("llama")
    m = get_method(name)
    d0 = lm.digest()
    with pytest.raises(InputError, match=rf"^{m.info.title} has no trained hypernetwork for tiny-llama; train one "
                                         rf"with `python -m editcore train {name} tiny-llama`$"):
        m.compute(lm, [REQ], load_hparams(name, m.Hparams, None))
    assert lm.digest() == d0
    status = training_status(lm, name)
    assert status["needs_training"] and not status["trained"]
    assert status["command"] == f"python -m editcore train {name} tiny-llama"


@pytest.mark.parametrize("name", METHODS)
def test_training_writes_an_artefact_that_compute_uses(name):
    lm = tiny.lm("gpt2")
    m = get_method(name)
    report = m.train(lm, tiny.training_hparams(m, steps=4))
    assert report["complete"] and report["steps"] == 4 and report["method"] == name
    assert [p["step"] for p in report["curve"]] == [0, 2, 4]
    files = sorted(p.name for p in store.folder(name).iterdir())
    assert files == [report["name"] + ".json", report["name"] + ".safetensors"]  # checkpoint removed
    assert not any(store.folder("mend").iterdir())  # each method keeps its own artefacts
    assert m.trained(lm)["name"] == report["name"]
    d0 = lm.digest()
    edit = m.compute(lm, [REQ], load_hparams(name, m.Hparams, None))
    assert lm.digest() == d0
    assert set(edit.patch.deltas) == {t["param"] for t in report["targets"]}
    assert edit.diagnostics["artefact"] == report["name"]


class _Stop(Exception):
    pass


@pytest.mark.parametrize("name", ("mend", *METHODS))
def test_resume_gives_the_same_network_as_an_uninterrupted_run(name, tmp_path, monkeypatch):
    lm = tiny.lm("llama")
    m = get_method(name)
    thp = tiny.training_hparams(m, steps=4)
    monkeypatch.setenv("EDITSCOPE_HOME", str(tmp_path / "a"))
    whole = m.train(lm, thp)
    want = store.load(whole["name"], kind=name)[0]

    monkeypatch.setenv("EDITSCOPE_HOME", str(tmp_path / "b"))

    def stop_at_2(_msg, frac):
        if frac >= 0.5:
            raise _Stop

    with pytest.raises(_Stop):
        m.train(lm, thp, stop_at_2)
    assert (store.folder(name) / (whole["name"] + ".ckpt.json")).is_file()
    assert m.trained(lm) is None
    resumed = m.train(lm, thp)
    got = store.load(resumed["name"], kind=name)[0]
    assert resumed["steps"] == 4 and resumed["curve"] == whole["curve"]
    assert set(got) == set(want)
    for k in want:
        assert torch.equal(got[k], want[k]), k


@pytest.mark.parametrize("name", METHODS)
def test_the_bench_facts_are_held_out(name):
    from editcore.perfbench import split_part

    lm = tiny.lm("gpt2")
    m = get_method(name)
    assert m.held_out_facts(lm) is None
    m.train(lm, tiny.training_hparams(m, holdout="report"))
    assert split_part("report") <= m.held_out_facts(lm)


def test_the_train_command_offers_every_trainable_method(capsys):
    from editcore.cli import main
    from editcore.cli.train import trainable_methods

    names = trainable_methods()
    assert {"ke", "malmen", "mend"} <= set(names)
    try:
        main(["train", "--help"])
    except SystemExit:
        pass
    out = capsys.readouterr().out
    assert all(n in out for n in names), out


@pytest.mark.parametrize("name", METHODS)
def test_bench_section_says_how_to_train_then_shows_the_run(name):
    import importlib

    lm = tiny.lm("gpt2")
    module = {"ke": "editcore.methods.ke.method", "malmen": "editcore.methods.malmen.bench"}[name]
    section = importlib.import_module(module).bench_section
    assert f"`python -m editcore train {name} tiny-gpt2`" in section(lm, [], {})["note"]
    report = get_method(name).train(lm, tiny.training_hparams(get_method(name)))
    got = section(lm, [], {})
    if name == "ke":
        assert [r["step"] for r in got["rows"]] == [p["step"] for p in report["curve"]]
    else:  # a random model knows no catalog fact, so there is nothing to batch
        assert got["rows"] == [] and "one batch" in got["title"]
