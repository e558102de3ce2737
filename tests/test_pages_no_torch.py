"""Pages and the app router never import torch or transformers (they call editcore.service), and
editcore never imports the UI's libraries (streamlit, plotly)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {"torch", "transformers"}
UI = {"streamlit", "plotly"}


def heavy_imports(source: str, forbidden: set[str] = FORBIDDEN) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""] if node.level == 0 else []
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                "import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
            names = [str(node.args[0].value)]
        else:
            continue
        found += [n for n in names if n.split(".")[0] in forbidden]
    return found


FILES = sorted([*ROOT.glob("pages/*.py"), *ROOT.glob("app/*.py")])


def test_there_are_pages_to_check():
    assert len([f for f in FILES if f.parent.name == "pages"]) >= 6


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_torch_or_transformers(path):
    assert heavy_imports(path.read_text()) == []


@pytest.mark.parametrize("src", ["import torch", "from transformers import AutoModel", "import torch.nn as nn",
                                 "import importlib\nimportlib.import_module('torch')"])
def test_the_check_catches_heavy_imports(src):
    assert heavy_imports(src)


def test_the_check_allows_the_service_layer():
    assert heavy_imports("from editcore import service\nimport streamlit as st") == []


CORE = sorted(ROOT.glob("editcore/**/*.py"))


@pytest.mark.parametrize("path", CORE, ids=lambda p: str(p.relative_to(ROOT)))
def test_editcore_never_imports_the_ui(path):
    assert heavy_imports(path.read_text(), UI) == []


def test_the_ui_check_catches_the_ui():
    assert heavy_imports("import plotly.graph_objects as go", UI)
    assert heavy_imports("from streamlit.testing.v1 import AppTest", UI)
