"""Model loading: bad input gives one-line errors (exit 2 in the CLI); the real model works offline."""

import subprocess
import sys
from pathlib import Path

import pytest

from editcore.cli import main
from editcore.errors import CorruptModelError, ModelNotFoundError
from editcore.models import load_model, registry

ROOT = Path(__file__).resolve().parents[1]


def test_unknown_name_is_a_clear_error():
    with pytest.raises(ModelNotFoundError, match="not built in"):
        load_model("gemma-3-270m-typo")


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no such"):
        load_model(str(tmp_path / "nope"))
    with pytest.raises(ModelNotFoundError, match="no such GGUF"):
        load_model(str(tmp_path / "nope.gguf"))


def test_directory_without_config(tmp_path):
    with pytest.raises(ModelNotFoundError, match="config.json"):
        load_model(str(tmp_path))


def test_corrupt_gguf_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("EDITSCOPE_HOME", str(tmp_path / "home"))
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\x00garbage" * 100)
    with pytest.raises(CorruptModelError, match="cannot read GGUF"):
        load_model(str(bad))
    assert not any((tmp_path / "home" / "models").glob("*")), "a failed conversion left files behind"


def test_hub_id_offline_is_a_clear_error():
    with pytest.raises(ModelNotFoundError, match="unreachable"):
        load_model("EleutherAI/gpt-j-6b")


@pytest.mark.parametrize("argv", [["generate", "no-such-model", "Hi"], ["generate", "/no/such/dir", "Hi"],
                                  ["generate", "EleutherAI/gpt-j-6b", "Hi"], ["prepare", "nope"]])
def test_cli_bad_model_exits_2_with_one_line(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err


def test_cli_models_lists_builtins(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "gemma-3-270m" in out and "smollm2-135m" in out


def test_trust_remote_code_is_off_by_default(monkeypatch, tmp_path):
    seen = {}

    def fake_from_pretrained(path, **kw):
        seen.update(kw)
        raise OSError("stop here")

    import transformers

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", fake_from_pretrained)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CorruptModelError):
        load_model(str(tmp_path))
    assert seen["trust_remote_code"] is False


@pytest.mark.integration
def test_real_model_knows_eiffel_tower(gemma):
    from editcore.decoding import greedy

    with gemma.scope():
        out = greedy(gemma, ["The Eiffel Tower is located in the city of"], max_new_tokens=3)[0]
    assert out.startswith(" Paris"), out


@pytest.mark.integration
def test_second_load_comes_from_converted_cache(gemma, monkeypatch):
    assert registry.is_prepared("gemma-3-270m")

    def no_conversion(*a, **k):
        raise AssertionError("converted again")

    monkeypatch.setattr(registry, "_convert_gguf", no_conversion)
    again = load_model("gemma-3-270m")
    assert again.fingerprint == gemma.fingerprint
    assert Path(again.info["path"]) == registry._converted_dir("gemma-3-270m")


@pytest.mark.integration
def test_cli_generate_capital_of_japan():
    proc = subprocess.run([sys.executable, "-m", "editcore", "generate", "gemma-3-270m", "The capital of Japan is",
                           "--max-new-tokens", "4"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-500:]
    assert "Tokyo" in proc.stdout
