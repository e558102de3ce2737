"""Everything the dashboard calls: models and generation (:mod:`.models`), what the pickers offer
(:mod:`.choices`), one edit and method comparisons (:mod:`.edit`), the impact scan of an edit (:mod:`.impact`),
views on a result (:mod:`.views`), sequential runs (:mod:`.sequential`), pitfall benchmarks (:mod:`.pitfalls`),
causal traces (:mod:`.trace`) and the guided tour (:mod:`.tour`), with on-disk result caching.

Pages never import torch or transformers; they pass plain data (names, dicts, numbers) in and get plain,
JSON-serialisable dicts back. Every failure a user can cause raises :class:`~editcore.errors.EditScopeError`.
Modules that load torch are imported inside the functions that use them, so importing the service is cheap.

Concurrency: the base model is shared between browser sessions. Every read of it and every edit runs
inside ``lm.scope()``, which holds the model's lock, so one session's edit is never seen by another and
the model is restored bit-for-bit afterwards (also when a run is stopped or fails). A caller that has
to wait for the lock is told so through its progress callback (:mod:`.progress`).
"""

from ..cases.resolve import catalog_related_words, is_case_target, resolve_case, with_new_target
from .choices import (benchmark_entries, benchmark_names, catalog_entries, known_case_ids, list_methods,
                      method_hparams, training_status)
from .edit import (QUICK_SKIPPED, cached_edit, compare_methods, edit_key, evaluation_families, free_form_preview,
                   run_edit)
from .impact import impact_cached, impact_scan, impact_view, prepare_impact
from .models import default_model, generate, load_model, model_choices, register_model, unregister_model
from .pitfalls import PITFALL_SOURCES, PUBLISHED_GPTJ, pitfall_run
from .progress import WAITING_MESSAGE, Progress
from .sequential import SEQ_MAX_EDITS, sequential_cached, sequential_config, sequential_run
from .tour import tour_cached, tour_step, tour_steps
from .trace import trace_fact, trace_settings_info, trace_summary
from .views import SCORECARD_FAMILY, nkl_rows, not_computed, result_csv_rows, scorecard, shift_views, word_diff

__all__ = [
    "cached_edit", "free_form_preview", "impact_cached", "impact_scan", "impact_view", "prepare_impact",
    "PITFALL_SOURCES", "PUBLISHED_GPTJ", "Progress", "QUICK_SKIPPED", "SCORECARD_FAMILY", "SEQ_MAX_EDITS",
    "WAITING_MESSAGE", "benchmark_entries", "benchmark_names", "catalog_entries", "catalog_related_words",
    "compare_methods", "default_model", "edit_key", "evaluation_families", "generate", "is_case_target",
    "known_case_ids", "list_methods", "load_model", "method_hparams", "model_choices", "nkl_rows", "not_computed",
    "pitfall_run", "register_model", "resolve_case", "result_csv_rows", "run_edit", "scorecard",
    "sequential_cached", "sequential_config", "sequential_run", "shift_views", "tour_cached", "tour_step",
    "tour_steps", "training_status", "unregister_model",
    "with_new_target", "word_diff",
    "trace_fact", "trace_settings_info", "trace_summary",
]
