"""Cases: the schema every fact becomes (:mod:`.schema`) and turning a plain spec into one (:mod:`.resolve`).

``resolve`` reads the catalog and the benchmarks, which are built on the schema themselves, so it is
imported by its own name (``editcore.cases.resolve``) and not from here.
"""

from .schema import (CONFLICT_TYPES, Case, ConflictCase, MultiHopCase, Probe, RoundTripCase, answers_equal,
                     case_from_dict, free_form_case)

__all__ = [
    "Probe",
    "Case",
    "MultiHopCase",
    "ConflictCase",
    "RoundTripCase",
    "free_form_case",
    "answers_equal",
    "case_from_dict",
    "CONFLICT_TYPES",
]
