"""Shared set-up for the dashboard's AppTests: tiny models, a private results cache, page paths."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import tiny

ROOT = Path(__file__).resolve().parents[1]
MAIN = str(ROOT / "app" / "main.py")
TIMEOUT = 120
OTHER_MODEL = "other (local path or hub id)…"


@contextlib.contextmanager
def tiny_env(tmp_path):
    """Tiny random models in the picker and a fresh EDITSCOPE_HOME (so results are never stale)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDITSCOPE_HOME", str(tmp_path / "home"))
        tiny.register_models()
        try:
            yield
        finally:
            tiny.unregister_models()


def app() -> AppTest:
    at = AppTest.from_file(MAIN, default_timeout=TIMEOUT)
    return at.run()


def page(name: str) -> str:
    # AppTest resolves page paths relative to the main script's folder (app/).
    return f"../pages/{name}.py"


def shared_lm(name: str):
    """The very LM object the app's st.cache_resource hands to every session."""
    from app import ui

    return ui._shared_model(name)
