"""Causal traces averaged over facts (the paper's Figure 2), and the layer they suggest editing.

The average indirect effect (AIE) of a state is the mean over facts of ``P(answer | that state restored) -
P(answer | corrupted)``; Meng et al. average it per token *category* (the subject's first, middle and last
tokens, the first token after the subject, further tokens, the last token) since prompts differ in length.
A fact with an empty category (a one-token subject has no middle) does not count towards that category.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .settings import KINDS

CATEGORIES = ("first subject token", "middle subject tokens", "last subject token", "first subsequent token",
              "further tokens", "last token")


def categories(trace: dict) -> dict[str, list[int]]:
    """The token indices of each category in one trace."""
    s0, s1 = trace["subject_range"]
    T = len(trace["tokens"])
    return {"first subject token": [s0], "middle subject tokens": list(range(s0 + 1, s1 - 1)),
            "last subject token": [s1 - 1], "first subsequent token": [s1] if s1 < T else [],
            "further tokens": list(range(s1 + 1, T - 1)), "last token": [T - 1]}


def strongest(trace: dict, kind: str = "mlp") -> tuple[int, int]:
    """(token, layer) of the largest restored probability in one trace's ``kind`` table."""
    scores = trace["kinds"][kind]["scores"]
    return max(((t, layer) for t in range(len(scores)) for layer in range(len(scores[t]))),
               key=lambda c: scores[c[0]][c[1]])


def average(traces: Sequence[dict]) -> dict:
    """``{"n_facts", "n_layers", "mean_high", "mean_low", "kinds": {kind: {"aie": {category: [per layer]},
    "n": {category: facts}}}, "strongest_mlp_at_subject_last": facts}``."""
    if not traces:
        raise ValueError("no traces to average")
    L = traces[0]["n_layers"]
    out = {"n_facts": len(traces), "n_layers": L, "kinds": {},
           "mean_high": sum(t["high"] for t in traces) / len(traces),
           "mean_low": sum(t["low"] for t in traces) / len(traces)}
    for kind in KINDS:
        if not all(kind in t["kinds"] for t in traces):
            continue
        sums = {c: [0.0] * L for c in CATEGORIES}
        counts = dict.fromkeys(CATEGORIES, 0)
        for t in traces:
            scores = t["kinds"][kind]["scores"]
            for cat, toks in categories(t).items():
                if not toks:
                    continue
                counts[cat] += 1
                for layer in range(L):
                    sums[cat][layer] += sum(scores[i][layer] - t["low"] for i in toks) / len(toks)
        out["kinds"][kind] = {"aie": {c: [v / counts[c] if counts[c] else None for v in sums[c]] for c in CATEGORIES},
                              "n": counts, "window": traces[0]["kinds"][kind]["window"]}
    if "mlp" in out["kinds"]:
        out["strongest_mlp_at_subject_last"] = sum(strongest(t)[0] == t["subject_last"] for t in traces)
    return out


_ROW = re.compile(r"^\|\s*(\d+)\s*\|\s*([\d.]+)%\s*\|\s*([\d.]+)%\s*\|\s*([\d.]+)\s*\|")


def sweep_rows(model_name: str) -> list[dict]:
    """The rows of ROME's committed layer sweep for a model (``editcore/hparams/rome/sweep_[rome_]<model>.md``):
    ``[{"layer", "success", "efficacy", "neighbourhood"}]``, empty when there is none."""
    from ..methods.base import HPARAMS_DIR

    # `bench --sweep` names its files sweep_rome_<model>.md; older ones are sweep_<model>.md.
    found = [p for p in (HPARAMS_DIR / "rome" / f"sweep_rome_{model_name}.md",
                         HPARAMS_DIR / "rome" / f"sweep_{model_name}.md") if p.is_file()]
    if not found:
        return []
    path = found[0]
    rows = []
    for line in path.read_text().splitlines():
        m = _ROW.match(line)
        if m:
            rows.append({"layer": int(m[1]), "success": float(m[2]) / 100, "efficacy": float(m[3]) / 100,
                         "neighbourhood": float(m[4])})
    return rows


def layer_advice(summary: dict, model_name: str, localisation: dict | None = None) -> dict:
    """The ROME layer the averaged trace suggests (the largest MLP effect at the subject's last token, the
    paper's criterion), beside the other ways of choosing one: the default rule for models without a sweep
    (a third of the way up), the shipped hyper-parameters, the committed layer sweep and, if given, the
    localisation experiment's per-layer edit scores."""
    from ..methods.base import load_hparams
    from ..methods.rome import RomeHparams

    L = summary["n_layers"]
    aie = summary["kinds"]["mlp"]["aie"]["last subject token"]
    traced = max(range(L), key=lambda layer: aie[layer] if aie[layer] is not None else float("-inf"))
    shipped = load_hparams("rome", RomeHparams, model_name).layer
    out = {"traced_layer": traced, "traced_effect": aie[traced], "rule_layer": max(0, round(L / 3) - 1),
           "shipped_layer": shipped if shipped >= 0 else None, "sweep": sweep_rows(model_name), "n_layers": L}
    if out["sweep"]:
        best = max(out["sweep"], key=lambda r: (r["success"], r["neighbourhood"]))
        out["sweep_best_layer"] = best["layer"]
    if localisation:
        per = localisation["per_layer"]
        best = max(per, key=lambda r: (r["success"], r["neighbourhood"]))
        out["localisation_best_layer"] = best["layer"]
    return out
