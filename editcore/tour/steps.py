"""The tour's steps: what each one teaches, in EditScope's own words, and the paper behind it.

Plain data only; :mod:`editcore.service.tour` runs the edits, :mod:`editcore.tour.effects` reads the
results, the dashboard's Tour page draws them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Step:
    id: str
    number: int
    title: str
    explain: str  # what the class is about to see
    why: str  # what it means, after the run
    reference: str
    kind: str  # edit | conflict | round | sequential | trace
    highlight: str  # the number the view puts first

    def to_dict(self) -> dict:
        return asdict(self)


STEPS: tuple[Step, ...] = (
    Step("reliability", 1, "Reliability and generalisation",
         "An edit is judged first on the very prompt it was made with (reliability), then on other wordings of "
         "the same question (generalisation). The tour edits facts until it finds one edit that wins on its prompt "
         "and on every paraphrase, and one that wins on its prompt but loses on a paraphrase.",
         "Winning on the edit prompt is the easy part: the method optimised exactly that string. A paraphrase asks "
         "the same fact through other tokens, and a method that memorised the surface form instead of the "
         "association loses there. That is why CounterFact reports paraphrase success (PS) beside efficacy (ES).",
         "Meng et al. 2022, Locating and Editing Factual Associations in GPT (CounterFact ES/PS); survey Table 2.",
         "edit", "generalisation"),
    Step("portability", 2, "Portability: the edit is not used in reasoning",
         "After a successful edit, ask a question that needs the new fact plus one more step (the country of the "
         "new city) or the same relation read backwards. The tour looks for an edit that wins on its prompt but "
         "whose one-hop or reverse question still does not give the answer the edit implies.",
         "Editing methods write one association (subject → object) into the weights. Nothing makes the model "
         "draw conclusions from it: the fact it would need to combine with the edit is stored elsewhere and was "
         "never touched, so questions one hop away keep the old world's answer.",
         "Yao et al. 2023, Editing Large Language Models: Problems, Methods, and Opportunities (portability); "
         "survey Table 2.", "edit", "portability"),
    Step("locality", 3, "Locality: the neighbours change too",
         "Prompts about other subjects that share the old answer (other museums in Paris) should not move. The "
         "tour looks for an edit after which a neighbour prompt changes its answer, and shows the neighbour KL "
         "divergence of every neighbour prompt.",
         "A rank-one or fine-tuning update changes the response to every key that resembles the edited subject, not "
         "only to the subject itself. The neighbourhood score only counts prompts whose winner flipped; the KL "
         "divergence of the whole next-token distribution also catches damage that does not flip a winner.",
         "Hoelscher-Obermaier et al. 2023, Detecting Edit Failures in Large Language Models (CounterFact+, "
         "neighbourhood KL); survey Table 2.", "edit", "nkl"),
    Step("bigben", 4, "The Louvre / Big Ben effect",
         "Move the Louvre to London and read more than the word London: do words that belong to London (Big Ben, "
         "Thames) rise on prompts about the Louvre, and does London start to appear after prompts that have "
         "nothing to do with the edit?",
         "The edit injects a direction that means “London-ness” at the subject's position, so everything the model "
         "associates with London comes along: that is the edit generalising, and it is also why the new target "
         "bleeds into unrelated text. Neither shows in efficacy or paraphrase scores.",
         "Hsueh et al. 2024, Editing the Mind of Giants (side effects of knowledge editing); Hoelscher-Obermaier "
         "et al. 2023 (bleed-over of the new target).", "edit", "related"),
    Step("conflicts", 5, "Conflicts: two edits that contradict each other",
         "Edit one fact, then a second fact that contradicts it (for example the capital of a country, then what "
         "the new capital is the capital of). Which edit does the model keep?",
         "Each edit is computed on the model as the previous one left it, and neither knows about the other. The "
         "later edit usually wins and the earlier one loses probability (conflict magnitude, CM): the model does "
         "not hold a consistent set of edits, it holds the last writer's.",
         "Li et al. 2024, Unveiling the Pitfalls of Knowledge Editing for Large Language Models (ConflictEdit, "
         "CS and CM); survey Table 3.", "conflict", "cm"),
    Step("distortion", 6, "Knowledge distortion: there and back again",
         "Edit a fact to a new object, then edit it back to the original. The edited object comes back — but do "
         "the subject's other true objects (a second official language, say) come back too?",
         "Undoing an edit with a second edit is not an undo: the second update is computed for one object and "
         "re-shapes the whole distribution over the relation's objects. Objects that were never edited lose "
         "probability (ignore rate, IR), and the distribution is measurably different (JS distortion, D).",
         "Li et al. 2024, Unveiling the Pitfalls of Knowledge Editing for Large Language Models (RoundEdit, D, IR, "
         "FR); survey Table 4.", "round", "ir"),
    Step("deterioration", 7, "Deterioration of general abilities",
         "Keep editing: many edits one after another, each on the already-edited model, while perplexity on "
         "held-out text and accuracy on small downstream probes are measured. A method that leaves the weights "
         "alone (GRACE, SERAC or WISE) runs beside it as the contrast.",
         "Every weight edit spends some of the model's capacity on something it was never trained for; "
         "the perturbations add up. Methods that keep the original parameters and route edited inputs to a "
         "memory avoid that drift — at the price of their own failure modes (routing and generalisation).",
         "Gupta et al. 2024, Model Editing at Scale leads to Gradual and Catastrophic Forgetting; Hartvigsen et "
         "al. 2023 (GRACE); Mitchell et al. 2022 (SERAC); Wang et al. 2024 (WISE); survey Figure 4.",
         "sequential", "perplexity"),
    Step("location", 8, "Where the fact lives",
         "Causal tracing corrupts the subject and restores one hidden state at a time: the states that bring the "
         "answer back are where the model reads the fact. Compare that with the layer the edit wrote to.",
         "ROME edits the MLP layer where tracing peaks on the last subject token — but Hase et al. found that "
         "where tracing points and where an edit works best are only loosely related: localisation does not "
         "tell you where to edit.",
         "Meng et al. 2022 (causal tracing); Hase et al. 2023, Does Localization Inform Editing?", "trace",
         "layer"),
)

BY_ID = {s.id: s for s in STEPS}
