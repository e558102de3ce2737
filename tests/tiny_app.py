"""The dashboard on tiny random models: ``streamlit run tests/tiny_app.py``.

Registers tiny-gpt2 (the default), tiny-llama and tiny-gemma3 with the service, then runs app/main.py;
the browser test and ``scripts/walkthrough.py --tiny`` serve this script, so that nothing outside tests/
imports from it. EDITSCOPE_TEST_TINY_LAYERS builds deeper models (default 3), so that the methods' default
layer choices (e.g. MEMIT's 3..8) exist in them.
"""

import os
import runpy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for folder in (ROOT, ROOT / "tests"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import tiny  # noqa: E402

tiny.register_models(n_layers=int(os.environ.get("EDITSCOPE_TEST_TINY_LAYERS", "3")))
runpy.run_path(str(ROOT / "app" / "main.py"), run_name="__main__")
