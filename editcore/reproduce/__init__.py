"""The survey's experiments reproduced on any model (Tables 3-4, Figure 4) and sequential editing at scale.

* :mod:`.data` — the cases of every experiment (public files, else the catalog);
* :mod:`.units` — one unit of work (a single-edit case, or one sequential run) as plain JSON in and out;
* :mod:`.engine` — where units run: in this process (default) or on Ray (optional extra);
* :mod:`.runner` — ``reproduce(engine, ReproConfig)``: cache-backed, resumable, with progress;
* :mod:`.report` — tables in the survey's layout, CSV, plotly figure, findings;
* :mod:`.sequential` — hundreds to thousands of kept edits with evaluation every k, collapse detection
  and resume;
* :mod:`.survey` — what the survey published and claims.
"""

from .runner import SURVEY_METHODS, ReproConfig, reproduce
from .sequential import SeqConfig, sequential_run

__all__ = ["ReproConfig", "SURVEY_METHODS", "SeqConfig", "reproduce", "sequential_run"]
