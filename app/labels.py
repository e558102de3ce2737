"""What the dashboard calls the numbers the service returns: scorecard rows, sequential curves and
pitfall benchmark sources. The service keeps only the keys."""

from __future__ import annotations

# The scorecard's rows, in order: key of service.scorecard, label, higher is better.
SCORECARD = (
    ("efficacy", "Efficacy", True),
    ("generalisation", "Generalisation", True),
    ("neighbourhood", "Neighbourhood score", True),
    ("nkl", "NKL", False),
    ("portability", "Portability", True),
    ("fluency", "Fluency", True),
    ("seconds", "Seconds", False),
)

# Curves of a sequential run: point key -> (label, log scale).
SEQ_CURVES = {
    "retention": ("Retention of earlier edits (share still top-1)", False),
    "neighbourhood_score": ("Locality: neighbourhood score", False),
    "perplexity": ("Perplexity", True),
    "probe_accuracy": ("Downstream probe accuracy", False),
    "weight_drift": ("Weight drift ||sum of deltas||_F", False),
}
# Curves that are shares (0 to 1): drawn on a fixed 0-1 axis, so that one lost edit does not look like a crash.
SEQ_RATE_CURVES = frozenset({"retention", "neighbourhood_score", "probe_accuracy"})

# One line on each of service.PITFALL_SOURCES.
PITFALL_SOURCES = {
    "conflicts (catalog)": "ConflictEdit-style reverse / composite / coverage pairs from the built-in catalog",
    "round trips (catalog)": "RoundEdit-style o → o' → o from the built-in catalog",
    "conflictedit (public)": "ConflictEdit files from a local folder (reverse_edit / composite_edit / coverage_edit)",
    "roundedit (public)": "RoundEdit easy / hard file from a local path",
}
