"""The reference path of a causal trace: Meng et al.'s procedure as written, batched.

Every restoration is a full forward of the prompt per noise sample: the subject's embeddings get the same
noise as in :func:`~editcore.tracing.runs.prepare`, and hooks put the clean run's state back at each
restored (kind, layer, token). Rows of many restorations share a forward. It is what the replay
(:mod:`editcore.tracing.replay`) is tested against, what it falls back to, and what tests use to restore
arbitrary sets of states (all of them, none of them).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .. import hooks
from .runs import Prepared, answer_prob
from .settings import window_range

Restoration = Sequence[tuple[str, int, int]]  # (kind, layer, token) triples restored together


@torch.no_grad()
def restored_probs(lm, prep: Prepared, restorations: Sequence[Restoration], batch_rows: int = 64) -> list[float]:
    """P(answer), averaged over the noise samples, with each set of states in ``restorations`` restored."""
    ad = lm.adapter
    S, T, dev = prep.settings.samples, prep.T, lm.device
    rows = [(r, s) for r in range(len(restorations)) for s in range(S)]
    probs = torch.zeros(len(restorations), dtype=torch.float64)
    s0, s1 = prep.s0, prep.s1
    slots = {"hidden": "block", "mlp": "mlp", "attn": "attn_out"}
    for start in range(0, len(rows), batch_rows):
        chunk = rows[start:start + batch_rows]
        samples = torch.tensor([s for _, s in chunk], device=dev)
        # (kind, layer) -> (row indices, token indices) to restore in this chunk
        plan: dict[tuple[str, int], tuple[list[int], list[int]]] = {}
        for i, (r, _s) in enumerate(chunk):
            for kind, layer, token in restorations[r]:
                rows_, toks = plan.setdefault((kind, layer), ([], []))
                rows_.append(i)
                toks.append(token)

        def put_back(kind, layer):
            idx, toks = (torch.tensor(v, device=dev) for v in plan[(kind, layer)])
            clean = prep.clean[kind][layer]

            def fn(_args, out):
                h = hooks.first(out)
                h[idx, toks] = clean[toks].to(h.dtype)
                return None
            return fn

        def noised(_args, emb):
            h = hooks.first(emb).clone()
            h[:, s0:s1] += prep.noise[samples].to(h.dtype)
            return hooks.replace_hidden(emb, h)

        points = [(ad.module("embed"), noised)]
        points += [(ad.module(slots[kind], layer), put_back(kind, layer)) for kind, layer in plan]
        x = torch.tensor([prep.ids], device=dev).expand(len(chunk), T)
        with hooks.together(hooks.on_output(m, fn) for m, fn in points):
            out = lm.model.base_model(input_ids=x, use_cache=False)
        p = answer_prob(lm, out.last_hidden_state[:, -1], prep.answer_id).double()
        probs.index_add_(0, torch.tensor([r for r, _ in chunk]), p)
    return (probs / S).tolist()


def reference_scores(lm, prep: Prepared, kinds, window: int, progress=None) -> dict[str, torch.Tensor]:
    """The same ``kind -> [T, L]`` table as :func:`~editcore.tracing.replay.replay_scores`, every cell by
    full forwards (tokens before the subject included)."""
    L, T = lm.adapter.n_layers, prep.T
    out = {}
    for i, kind in enumerate(kinds):
        cells = [(t, layer) for t in range(T) for layer in range(L)]
        if kind == "hidden":
            sets = [[("hidden", layer, t)] for t, layer in cells]
        else:
            sets = [[(kind, j, t) for j in range(*window_range(layer, window, L))] for t, layer in cells]
        got = restored_probs(lm, prep, sets)
        out[kind] = torch.tensor(got, dtype=torch.float64).view(T, L)
        if progress is not None:
            progress(f"restoring {kind} states (plain forwards)", (i + 1) / len(kinds))
    return out
