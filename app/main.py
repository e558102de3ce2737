"""EditScope dashboard entry point: ``streamlit run app/main.py``.

This script is the router: it sets up the page, draws the sidebar model picker and hands over to the
page chosen in the URL (each page has its own ``url_path``).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # streamlit puts app/ on the path, not the repository root
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from app import ui  # noqa: E402

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

st.set_page_config(page_title="EditScope", page_icon=":material/biotech:", layout="wide")

nav = st.navigation([ui.page(name) for name in ui.PAGES])
ui.sidebar_model_picker()
nav.run()
