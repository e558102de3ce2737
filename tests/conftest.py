import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

# Tests never touch the network: the hub is unreachable here and must not be tried.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# The on-disk pre-edit score cache is per user; tests that want it turn it on in a private home.
os.environ["EDITSCOPE_PRECACHE"] = "0"


def pytest_configure(config):
    config.addinivalue_line("markers", "integration: needs the real bundled model (prepared on first use)")
    config.addinivalue_line("markers", "browser: drives the dashboard in headless Chromium")


@pytest.fixture(scope="session")
def gemma():
    """The real default model, loaded once per test session."""
    from editcore.models import load_model

    return load_model("gemma-3-270m")


@pytest.fixture
def tmp_home(tmp_path, monkeypatch):
    """A private $EDITSCOPE_HOME for one test (caches of prefixes and statistics)."""
    monkeypatch.setenv("EDITSCOPE_HOME", str(tmp_path / "home"))


@pytest.fixture(scope="module")
def module_home(tmp_path_factory):
    """A private $EDITSCOPE_HOME shared by one module's tests, so that a tiny model's layer statistics and
    trained artefacts are computed once per module, not per test. Use it with
    ``pytestmark = pytest.mark.usefixtures("module_home")`` or as a fixture argument."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDITSCOPE_HOME", str(tmp_path_factory.mktemp("home")))
        yield


@pytest.fixture
def corpus(tmp_path):
    """A small local text corpus for layer statistics on tiny models."""
    import tiny

    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(tiny.CORPUS * 30))
    return str(path)
