"""EditScope core: load a causal LM, apply reversible knowledge edits, measure their side effects.

Nothing in this package imports streamlit or plotly: the dashboard (``app/``, ``pages/``) draws, and talks to
:mod:`editcore.service`.
"""

__version__ = "0.1.0"
