"""The logit lens: what each layer's residual stream would predict if the model stopped there.

Every block's output (and the embedding layer's, as layer "emb") at a position goes through the model's own
final norm and unembedding (:meth:`~editcore.models.arch.ArchAdapter.logits`, soft-cap included), giving a
next-token distribution per layer; the last layer's is the model's output. Read at the prompt's last token
(where the answer is predicted) and at the subject's last token (where ROME writes its edit), for the old and
the new target's first token. Before and after an edit, it shows the depth at which the new target takes over.
"""

from __future__ import annotations

import time

import torch

from .. import hooks
from .runs import subject_span
from .trace import token_strings
from ..text import target_ids


@torch.no_grad()
def logit_lens(lm, template: str, subject: str, targets: dict[str, str], top_k: int = 1) -> dict:
    """``{"layers", "positions": {"last" | "subject_last": {"index", "token", "p": {label: [per layer]},
    "rank": {label: [...]}, "top": [[token, p] per layer]}}}`` on the model as it is now; ``targets`` maps a
    label ("old", "new") to a target string (its first token is read)."""
    t0 = time.perf_counter()
    ad = lm.adapter
    ids, _s0, s1 = subject_span(lm.tokenizer, template, subject)
    want = {label: target_ids(lm.tokenizer, t)[0] for label, t in targets.items() if t}
    positions = {"last": len(ids) - 1, "subject_last": s1 - 1}
    states: list[torch.Tensor | None] = [None] * (ad.n_layers + 1)
    pos = torch.tensor(list(positions.values()), device=lm.device)

    def keep(j):
        return lambda _a, out: states.__setitem__(j, hooks.first(out)[0, pos].detach())

    # "emb" is the first block's input rather than the embedding module's output: some families add more
    # before the first block (GPT-2's position embeddings).
    points = [hooks.on_input(ad.block(0), lambda args: states.__setitem__(0, args[0][0, pos].detach()))]
    points += [hooks.on_output(ad.block(j), keep(j + 1)) for j in range(ad.n_layers)]
    with hooks.together(points):
        lm.model.base_model(input_ids=torch.tensor([ids], device=lm.device), use_cache=False)
    h = torch.stack(states)  # [L + 1, 2, d]
    flat = ad.module("final_norm")(h.reshape(-1, h.shape[-1])[:, None])[:, 0]
    logp = torch.log_softmax(ad.logits(flat).float(), -1).view(ad.n_layers + 1, len(positions), -1)
    out = {"layers": ["emb"] + [str(j) for j in range(ad.n_layers)], "targets": dict(targets),
           "target_tokens": {k: lm.tokenizer.decode([v]) for k, v in want.items()}, "positions": {}}
    for i, (name, p) in enumerate(positions.items()):
        lp = logp[:, i]
        top_p, top_i = lp.exp().topk(top_k, dim=-1)
        entry = {"index": p, "token": lm.tokenizer.decode([ids[p]]),
                 "p": {k: lp[:, v].exp().tolist() for k, v in want.items()},
                 "rank": {k: (lp > lp[:, v:v + 1]).sum(-1).tolist() for k, v in want.items()},
                 "top": [[token_strings(lm.tokenizer, [int(top_i[j, 0])])[0], float(top_p[j, 0])]
                         for j in range(lp.shape[0])]}
        out["positions"][name] = entry
    out["seconds"] = time.perf_counter() - t0
    return out
