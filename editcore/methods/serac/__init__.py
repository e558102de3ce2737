"""SERAC: Semi-parametric Editing with a Retrieval-Augmented Counterfactual model (Mitchell et al. 2022b,
"Memory-Based Model Editing at Scale").

Three parts, none of them a change to the base model's weights:

1. an **edit memory**: the edits made so far (``"<edit prompt> <new target>"``);
2. a **scope classifier** (:mod:`.classifier`) giving, for a query and each stored edit, the probability that
   the query is about that edit;
3. a **counterfactual model** answering in-scope queries given the most probable edit.

**The edited model** is a router in front of the base model, realised as an input rewrite: a prompt whose
best edit scores at least ``threshold`` is given to the counterfactual model, every other prompt goes to the
untouched base model (bit-identical outputs). Every metric, generation and probe reads the edited model
through that router.

**Departure from the paper** (also in ``MethodInfo.adaptation``): the paper trains a separate counterfactual
model (a small seq2seq or LM fine-tuned to answer given an edit). Here the counterfactual model is the base
model itself conditioned on the retrieved edit: the prompt is preceded by IKE's context for that one edit
(:class:`editcore.methods.ike.Prompter`: ``k`` retrieved demonstrations, the edit as ``New Fact``). The
scope classifier is trained here (``python -m editcore train serac``; a frozen sentence encoder and a small
head, see :mod:`.classifier`), not the paper's fine-tuned cross-encoder. It does not depend on the language
model, so its artefact is keyed by the encoder, not by the model.

Sequential edits grow the memory the way IKE's does (:class:`~editcore.methods.ike.FactMemory`): the
newest SERAC patch routes over the union of every active SERAC patch's edits. With an empty memory the
router passes every prompt through: the edited model is exactly the base model.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from ...scope import Patch
from ...types import Request
from ..base import Edit, MethodInfo, Progress, hparam
from ..common import validate_requests
from ..ike import FactMemory, PromptHparams, Prompter, context_diagnostics, fact_text, merge_facts
from . import classifier
from .classifier import ScopeClassifier, SeracTrainHparams

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SeracHparams(PromptHparams):
    k: int = hparam(8, lo=0, hi=64, help="demonstrations the counterfactual model is given with the edit")
    threshold: float = hparam(0.5, lo=0.0, hi=1.0, help="scope probability from which a query goes to the edit")


class SeracRouter(FactMemory):
    """The edited model's front door: in-scope prompts get the best edit's context, the rest pass unchanged."""

    def __init__(self, tokenizer, edits: Sequence[Request], scope: ScopeClassifier, prompter: Prompter,
                 threshold: float):
        super().__init__(tokenizer, edits)
        self.scope, self.prompter, self.threshold = scope, prompter, threshold

    def route(self, edits: Sequence[Request], text: str) -> tuple[Request | None, float]:
        """The edit ``text`` is about (None: out of scope) and its scope probability (0 with no edits)."""
        if not edits:
            return None, 0.0
        probs = self.scope.probabilities([fact_text(e) for e in edits], text)
        best = int(probs.argmax())
        p = float(probs[best])
        return (edits[best] if p >= self.threshold else None), p

    def rewrite(self, facts, text):
        edit, _ = self.route(facts, text)
        return text if edit is None else self.prompter.context([edit], text).prefix + text


class Serac:
    name = "serac"
    Hparams = SeracHparams
    TrainHparams = SeracTrainHparams
    needs_training = True
    batched = False
    info = MethodInfo(
        title="SERAC", category="memory-based", changes_weights=False,
        reference="Mitchell et al. 2022, Memory-Based Model Editing at Scale",
        summary="Keeps edits in a memory outside the model. A scope classifier decides whether a prompt is about "
                "a stored edit; if so, a counterfactual model answers it given that edit, otherwise the untouched "
                "base model answers. Needs a trained scope classifier (`python -m editcore train serac`).",
        adaptation="The counterfactual model is the base model conditioned on the retrieved edit (IKE's prompt: "
                   "k demonstrations and the edit as a new fact), not a separately trained model; the scope "
                   "classifier is a small head over frozen all-MiniLM-L6-v2 embeddings trained here on catalog, "
                   "CounterFact and zsRE pairs, not a fine-tuned cross-encoder.")

    @property
    def version(self) -> str:
        """Bumped by hand when results change, and followed by the current classifiers' keys: a retrained
        classifier changes results, so cached ones must not stand in for them."""
        keys = classifier.current_keys()
        return "1" + "".join(f"+{k[:10]}" for _, k in sorted(keys.items()))

    # ---- training (methods.base.Trainable) ----------------------------------------------------------
    def trained(self, lm) -> dict | None:
        from ..base import load_hparams

        thp = load_hparams(self.name, SeracTrainHparams, lm.name, prefix="train_")
        return classifier.current_report(thp.encoder)

    def estimate_training_seconds(self, lm, thp: SeracTrainHparams) -> float:
        return classifier.estimate_seconds(thp, lm.device)

    def train(self, lm, thp: SeracTrainHparams, progress: Progress | None = None, *, resume: bool = True) -> dict:
        """The classifier does not depend on ``lm``; it is trained on ``lm``'s device."""
        return classifier.train(thp, lm.device, progress, resume)

    # ---- editing ------------------------------------------------------------------------------------
    def router(self, lm, hp: SeracHparams, edits: Sequence[Request] = (), progress: Progress | None = None) -> SeracRouter:
        """A router over ``edits`` (none: the base model exactly)."""
        hp.check()
        scope = classifier.load_current(hp.encoder, lm.device)
        return SeracRouter(lm.tokenizer, edits, scope, Prompter(lm, hp, progress), hp.threshold)

    def compute(self, lm, requests: Sequence[Request], hp: SeracHparams, progress: Progress | None = None, *,
                speed=None) -> Edit:
        t0 = time.perf_counter()
        reqs = validate_requests(lm, requests)
        edits = merge_facts(list(SeracRouter.active_facts(lm.tokenizer)) + reqs)
        router = self.router(lm, hp, edits, progress)
        req = reqs[-1]
        routed, p = router.route(edits, req.text)
        rep = router.scope.report
        diagnostics = {"memory_size": len(edits), "scope_probability": p, "edit_prompt_in_scope": routed == req,
                       "classifier": rep["key"][:12], "classifier_heldout_f1": rep["heldout_f1"], "k": hp.k}
        if routed is not None:
            diagnostics.update(context_diagnostics(lm, router.prompter.context([routed], req.text), req.text))
        if routed != req:
            diagnostics["warnings"] = [
                f"the scope classifier does not route the edit prompt to this edit (probability {p:.2f} < "
                f"{hp.threshold})" if routed is None else "the scope classifier routes the edit prompt to an "
                f"earlier edit ({routed.subject} -> {routed.target_new})"]
        patch = Patch(rewrite=router, label=f"SERAC {req.subject} -> {req.target_new}")
        seconds = time.perf_counter() - t0
        log.info("SERAC %r -> %r: %d edits in memory, scope p=%.3f, %.2fs", req.subject, req.target_new, len(edits),
                 p, seconds)
        return Edit(self.name, tuple(reqs), patch, seconds, diagnostics)


METHOD = Serac()
