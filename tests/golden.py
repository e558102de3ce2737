"""Recorded edits on tiny random models, to prove that a refactoring changed no result.

``record()`` runs every weight-editing method on every tiny family and returns plain data (loss curves,
steps, and each update's norm and a fixed sample of its entries). ``tests/data/golden_edits.json`` holds what
the code gave when the file was written; ``test_golden_edits.py`` compares a fresh ``record()`` with it.
Regenerate only when a result is *meant* to change: ``python tests/golden.py`` (say why in the commit).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "data" / "golden_edits.json"

REQUESTS = (("{} is located in the city of", "The Louvre", "London"),
            ("The mother tongue of {} is", "Danielle Darrieux", "English"),
            ("{} is developed by", "Windows 11", "Apple"))

# (method, hyper-parameter overrides, how many requests at once)
# A small learning rate keeps the tiny random models' loss curves smooth: with ROME's 0.5 they jump around,
# and a curve that amplifies rounding would make this comparison fragile. MEMIT's z* sits below the last
# block (at the last block the target positions cannot see the subject's token).
_VALUE = {"stats_samples": 1500, "v_num_grad_steps": 6, "v_lr": 0.05, "context_prefixes": 2, "context_tokens": 3}
RUNS = (
    ("rome", {"layer": 1, **_VALUE}, 1),
    ("rome", {"layer": 1, **_VALUE, "consistent_keys": True, "v_stop_prob": 1.0}, 1),
    ("memit", {"layers": [0, 1], **_VALUE}, 3),
    ("ft_l", {"layer": 1, "steps": 4}, 2),
    ("ft", {"layer": 1, "steps": 4, "train_mlp_in": True}, 1),
    ("kn", {}, 1),
)


def _sample(t: torch.Tensor, n: int = 16) -> list[float]:
    flat = t.detach().double().flatten()
    idx = torch.linspace(0, flat.numel() - 1, n).long()
    return [float(x) for x in flat[idx]]


def _curves(d: dict) -> dict:
    keys = ("loss_curve", "loss_curves", "target_prob_curve", "steps", "steps_per_request", "losses")
    return {k: d[k] for k in keys if k in d}


# Float sums split across threads round differently: the file was recorded with 2 intra-op threads, and
# pinning that count makes the comparison independent of the machine's cores (1 thread moved a MEMIT
# update's norm by 0.3%).
THREADS = 2


def record(families=None) -> dict:
    import tiny
    from editcore.methods import get_method
    from editcore.methods.base import load_hparams
    from editcore.types import Request

    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        import os

        old = os.environ.get("EDITSCOPE_HOME")
        os.environ["EDITSCOPE_HOME"] = str(Path(tmp) / "home")
        corpus = Path(tmp) / "corpus.txt"
        corpus.write_text("\n".join(tiny.CORPUS * 30))
        threads = torch.get_num_threads()
        torch.set_num_threads(THREADS)
        try:
            for family in families or tiny.FAMILIES:
                lm = tiny.lm(family)
                for i, (name, over, n) in enumerate(RUNS):
                    m = get_method(name)
                    fields = {f for f in m.Hparams.__dataclass_fields__}
                    hp_over = dict(over)
                    if "stats_corpus" in fields:
                        hp_over["stats_corpus"] = str(corpus)
                    hp = load_hparams(m.name, m.Hparams, None, hp_over)
                    reqs = [Request(*r) for r in REQUESTS[:n]]
                    edit = m.compute(lm, reqs, hp)
                    out[f"{family}/{i}:{name}"] = {
                        "curves": _curves(edit.diagnostics),
                        "deltas": {p: {"norm": float(d.double().norm()), "sample": _sample(d)}
                                   for p, d in sorted(edit.patch.deltas.items())},
                    }
        finally:
            torch.set_num_threads(threads)
            if old is None:
                os.environ.pop("EDITSCOPE_HOME", None)
            else:
                os.environ["EDITSCOPE_HOME"] = old
    return out


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(HERE.parent))
    GOLDEN.write_text(json.dumps(record(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}")
