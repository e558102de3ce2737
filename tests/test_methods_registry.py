"""Every registered method honours the contract: loadable hparams, a Patch on the model's parameters,
the model bit-identical after compute and after the scope; plus the shipped hparam files load."""

import json

import pytest

import tiny
from editcore.errors import InputError
from editcore.methods import available, get_method
from editcore.methods.base import HPARAMS_DIR, load_hparams
from editcore.scope import param_digest
from editcore.types import Request

REQ = Request("{} is located in the city of", "The Louvre", "London")


def test_rome_and_memit_registered():
    assert {"rome", "memit"} <= set(available())
    with pytest.raises(InputError, match="unknown method"):
        get_method("nonesuch")


@pytest.mark.parametrize("name", available())
def test_every_method_is_complete(name):
    """What CONTRIBUTING.md asks of a new method, checked for every registered one: the attributes the
    pages and the bench read, a MethodInfo, compute() taking the speed settings, and hyper-parameters for
    every bundled model (a JSON file each, plus default.json for any other model)."""
    import dataclasses
    import inspect

    from editcore.methods.base import CATEGORIES, MethodInfo
    from editcore.models import BUILTIN

    m = get_method(name)
    assert m.name == name and isinstance(m.version, str) and isinstance(m.batched, bool)
    assert isinstance(m.info, MethodInfo) and m.info.category in CATEGORIES
    assert m.info.title and m.info.reference and len(m.info.summary) > 40
    assert dataclasses.is_dataclass(m.Hparams)
    assert "speed" in inspect.signature(m.compute).parameters
    folder = HPARAMS_DIR / name
    for model in [*BUILTIN, "default"]:
        assert (folder / f"{model}.json").is_file(), f"{name} has no hparams/{name}/{model}.json"
        load_hparams(name, m.Hparams, model)


@pytest.mark.parametrize("name", available())
def test_shipped_hparam_files_load(name):
    method = get_method(name)
    files = sorted((HPARAMS_DIR / name).glob("*.json"))
    assert any(f.stem == "default" for f in files)
    for f in files:
        json.loads(f.read_text())
        if f.stem.startswith("train_"):  # a trainable method's training settings (methods.base.Trainable)
            load_hparams(name, method.TrainHparams, f.stem[len("train_"):], prefix="train_")
        else:
            load_hparams(name, method.Hparams, f.stem)


@pytest.mark.parametrize("name", ["rome", "memit", "emmet", "pmet", "alphaedit"])
@pytest.mark.parametrize("family", ["gpt2", "qwen2"])
def test_contract_on_tiny_models(name, family, tmp_path, monkeypatch):
    monkeypatch.setenv("EDITSCOPE_HOME", str(tmp_path / "home"))
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(tiny.CORPUS * 20))
    lm = tiny.lm(family)
    method = get_method(name)
    # default.json: automatic layer choice must work on any depth.
    hp = load_hparams(name, method.Hparams, "no-such-model",
                      {"stats_samples": 400, "stats_corpus": str(corpus), "v_num_grad_steps": 2,
                       "context_prefixes": 1, "context_tokens": 2})
    before = param_digest(lm.model)
    edit = method.compute(lm, [REQ], hp)
    assert param_digest(lm.model) == before
    params = dict(lm.model.named_parameters())
    for pname, delta in edit.patch.deltas.items():
        assert pname in params and delta.shape == params[pname].shape
        assert pname.endswith(".weight") and "mlp" in pname
    s = edit.summary()
    assert s["method"] == name and s["seconds"] >= 0 and s["update_norms"]
    json.dumps(s)  # summaries are plain data
    with lm.scope(edit.patch):
        pass
    assert param_digest(lm.model) == before


@pytest.mark.parametrize("name", available())
def test_a_trainable_method_has_the_training_interface(name):
    """A method that needs training offers what `editcore train` and the dashboard call (methods.base.Trainable),
    with training settings for every bundled model."""
    import dataclasses

    from editcore.methods.base import needs_training
    from editcore.models import BUILTIN

    m = get_method(name)
    if not needs_training(m):
        assert not hasattr(m, "TrainHparams")
        return
    assert dataclasses.is_dataclass(m.TrainHparams)
    for attr in ("trained", "estimate_training_seconds", "train"):
        assert callable(getattr(m, attr)), attr
    for model in [*BUILTIN, "default"]:
        assert (HPARAMS_DIR / name / f"train_{model}.json").is_file()
        load_hparams(name, m.TrainHparams, model, prefix="train_")


def test_train_command_refuses_a_method_without_training(capsys):
    from editcore.cli import main

    assert main(["train", "rome", "tiny"]) == 2
    assert "needs no training" in capsys.readouterr().err
