"""What the survey (Hsueh et al. 2024, "Editing the Mind of Giants", arXiv:2406.01436) published, as far
as a readable source gives it, and the claims of its discussion that a reproduction checks.

Published GPT-J numbers: none are transcribed. The searches made for this module (the stored arXiv HTML
pages of 2406.01436 v1/v2, which the search tools return only from their beginning, and the authors'
repository MiuLab/EditLLM-Survey, whose README has the discussion but no result tables) did not reach the
text of Tables 3 and 4 or the data behind Figure 4. A value may be added here only with its source; until
then every "published (GPT-J)" cell says why it is empty instead of holding a guess.
"""

from __future__ import annotations

PUBLISHED_SOURCE = "Hsueh et al. 2024, arXiv:2406.01436, Tables 3-4 (GPT-J)"

# (table, column) -> {method: value}; empty on purpose (see the module docstring).
PUBLISHED_GPTJ: dict[tuple[str, str], dict[str, float]] = {}

PUBLISHED_NOTE = ("not transcribed: the text of the survey's Tables 3-4 was not readable from any source "
                  "available here (arXiv HTML reached only from its beginning; the authors' repository "
                  "MiuLab/EditLLM-Survey has no result tables)")


def published(table: str, column: str, method: str) -> float | None:
    return PUBLISHED_GPTJ.get((table, column), {}).get(method)


# The survey's claims that a run can test, in EditScope's own words (the survey's discussion, also in its
# repository's README). Each names the check report.findings applies.
CLAIMS = (
    {"id": "ike_portability",
     "claim": "IKE (in-context editing) is the best method on single-edit portability.",
     "check": "IKE has the highest mean of Subject-Replace, Reverse-Relation and One-Hop"},
    {"id": "param_methods_degrade",
     "claim": "Parameter-modifying methods lose general ability as edits accumulate, while GRACE and SERAC "
              "stay flat.",
     "check": "mean downstream score after the most edits minus the unedited score, per method"},
    {"id": "memit_slower_than_rome",
     "claim": "MEMIT degrades more slowly than ROME as edits accumulate.",
     "check": "MEMIT's drop in mean downstream score is smaller than ROME's"},
)
