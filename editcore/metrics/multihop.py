"""Multi-hop consistency (MQuAKE; Zhong et al. 2023, "MQuAKE: Assessing Knowledge Editing in Language
Models via Multi-Hop Questions", §3.3 and the evaluation setups of princeton-nlp/MQuAKE's README), on the
model *after all edits of an instance* are applied:

* EW, edit-wise success: the share of edits whose cloze statement (the one the edit was written with,
  asked without demonstrations) is continued with the edit's new target or one of its aliases, **pooled
  over the edits of all instances** (an instance with four edits weighs four times one with one);
* IW, instance-wise accuracy: 1 if *every* new single hop of the instance is answered with its answer or
  an alias. As in MQuAKE, an edited hop is asked as its cloze statement without demonstrations and an
  unedited hop as its question after few-shot demonstrations (:data:`SINGLE_HOP_DEMOS`);
* MH, multi-hop accuracy: 1 if *any* of the instance's multi-hop questions is answered with the new answer
  or an alias, asked after MQuAKE-style demonstrations: ``"few-shot"`` (lines ``Q: … A: …``,
  :data:`MULTIHOP_DEMOS`) or ``"cot"`` (``Question / Thoughts / Answer`` blocks, :data:`COT_DEMOS`).

The demonstrations follow MQuAKE's prompt structure with facts written for EditScope (not MQuAKE's own);
MQuAKE writes eight demonstrations per relation for single hops, EditScope one mixed set.

Matching (:mod:`.matching`): a cloze continuation must start with the answer; a question's answer (the
generated line, or for CoT the text after ``Answer:``) must equal it, both after SQuAD normalisation
(MQuAKE compares the raw strings).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .matching import exact_match, first_line, normalise, starts_with_answer
from .numeric import CI, ItemSummary, bootstrap_ci, ci_of

PROMPTINGS = ("few-shot", "cot")

# (question, answer): two- and three-hop questions about well-known, unchanging facts.
MULTIHOP_DEMOS: tuple[tuple[str, str], ...] = (
    ("In which country is the city where the Eiffel Tower stands?", "France"),
    ("What is the capital of the country where the Taj Mahal is located?", "New Delhi"),
    ("Which language is spoken in the country whose capital is Lisbon?", "Portuguese"),
    ("Who founded the company that makes the iPhone?", "Steve Jobs"),
    ("On which continent is the country where the Colosseum is located?", "Europe"),
    ("What is the official language of the country where the Sydney Opera House is located?", "English"),
    ("Which city is the capital of the country where Toyota has its headquarters?", "Tokyo"),
    ("In which country was the author of \"Don Quixote\" born?", "Spain"),
    ("Who was the spouse of the author of \"Frankenstein\"?", "Percy Bysshe Shelley"),
    ("What currency is used in the country where Mount Fuji is located?", "Japanese yen"),
    ("On which continent is the country of citizenship of Nelson Mandela?", "Africa"),
    ("What is the capital of the country where the Amazon River reaches the sea?", "Brasília"),
)

# (question, thoughts, answer): the same kind of questions with the hops spelled out.
COT_DEMOS: tuple[tuple[str, str, str], ...] = (
    ("What is the capital of the country where the Taj Mahal is located?",
     "The Taj Mahal is located in the country of India. The capital of India is New Delhi.", "New Delhi"),
    ("Who founded the company that makes the iPhone?",
     "The iPhone is made by Apple. Apple was founded by Steve Jobs.", "Steve Jobs"),
    ("On which continent is the country of citizenship of the author of \"One Hundred Years of Solitude\"?",
     "\"One Hundred Years of Solitude\" was written by Gabriel García Márquez. Gabriel García Márquez is a "
     "citizen of Colombia. Colombia is located in the continent of South America.", "South America"),
    ("What is the official language of the country where the Sydney Opera House is located?",
     "The Sydney Opera House is located in the country of Australia. The official language of Australia is "
     "English.", "English"),
)

# (question, answer): single-hop questions over the relations MQuAKE chains.
SINGLE_HOP_DEMOS: tuple[tuple[str, str], ...] = (
    ("What is the capital of Canada?", "Ottawa"),
    ("Which continent is Kenya located in?", "Africa"),
    ("Who wrote \"Pride and Prejudice\"?", "Jane Austen"),
    ("What is the country of citizenship of Pablo Picasso?", "Spain"),
    ("Which company produced the PlayStation?", "Sony"),
    ("What is the official language of Brazil?", "Portuguese"),
    ("Who is the spouse of Barack Obama?", "Michelle Obama"),
    ("In which city was Wolfgang Amadeus Mozart born?", "Salzburg"),
)

QUESTION_TOKENS = 12  # a short answer line
COT_TOKENS = 96  # thoughts over three or four hops, then the answer


def qa_prompt(question: str, demos: Sequence[tuple[str, str]] = MULTIHOP_DEMOS) -> str:
    """MQuAKE's standard prompt: one ``Q: … A: …`` line per demonstration, then the question."""
    head = "".join(f"Q: {q} A: {a}\n" for q, a in demos)
    return f"{head}Q: {question.strip()} A:"


def cot_prompt(question: str, demos: Sequence[tuple[str, str, str]] = COT_DEMOS) -> str:
    """MQuAKE's chain-of-thought prompt: ``Question / Thoughts / Answer`` blocks, then the question."""
    head = "".join(f"Question: {q}\nThoughts: {t}\nAnswer: {a}\n\n" for q, t, a in demos)
    return f"{head}Question: {question.strip()}\nThoughts:"


def answer_of(generated: str, prompting: str) -> str | None:
    """The answer a generation gives: the first line after ``A:`` (few-shot), the text after ``Answer:``
    (CoT; None when the model never gets there)."""
    if prompting == "cot":
        at = generated.find("Answer:")
        return first_line(generated[at + len("Answer:"):]) if at >= 0 else None
    return first_line(generated.split("Q:")[0])


def is_answer(generated: str, prompting: str, answers: Sequence[str]) -> bool:
    got = answer_of(generated, prompting)
    return got is not None and exact_match(got, answers)


@dataclass
class MultiHopOutcome:
    id: str
    edit_wise: list[bool]
    single_hops: list[bool]
    questions: list[bool]
    generated: list[str]
    prompting: str = "few-shot"

    @property
    def ew(self) -> float:
        """This instance's share (the summary pools edits over instances instead, as MQuAKE does)."""
        return sum(self.edit_wise) / len(self.edit_wise) if self.edit_wise else 0.0

    @property
    def iw(self) -> bool:
        return bool(self.single_hops) and all(self.single_hops)

    @property
    def mh(self) -> bool:
        return any(self.questions)


@dataclass(frozen=True)
class Hop:
    """A new single hop: its cloze statement, its question (None: ask the cloze), accepted answers and
    whether an edit of the instance wrote it."""

    cloze: str
    question: str | None
    answers: tuple[str, ...]
    edited: bool


def multihop_outcome(scorer, id: str, edits: Sequence[tuple[str, Sequence[str]]], hops: Sequence[Hop],
                     questions: Sequence[str], answers: Sequence[str], prompting: str = "few-shot") -> MultiHopOutcome:
    """``edits``: (cloze statement, accepted new targets) per edit; ``hops``: the new single hops;
    ``answers``: the new answer and its aliases. Reads the scorer's (edited) model state."""
    if prompting not in PROMPTINGS:
        raise ValueError(f"prompting must be one of {PROMPTINGS}")
    cloze = [p for p, _ in edits] + [h.cloze for h in hops if h.edited or not h.question]
    asked = [qa_prompt(h.question, SINGLE_HOP_DEMOS) for h in hops if not (h.edited or not h.question)]
    multi = [cot_prompt(q) if prompting == "cot" else qa_prompt(q) for q in questions]
    cloze, asked = list(dict.fromkeys(cloze)), list(dict.fromkeys(asked))
    outs_cloze = dict(zip(cloze, scorer.greedy(cloze, QUESTION_TOKENS)))
    outs_asked = dict(zip(asked, scorer.greedy(asked, QUESTION_TOKENS)))
    outs_multi = scorer.greedy(multi, COT_TOKENS if prompting == "cot" else QUESTION_TOKENS)
    ew = [starts_with_answer(outs_cloze[p], targets) for p, targets in edits]
    sh = []
    for h in hops:
        if h.edited or not h.question:
            sh.append(starts_with_answer(outs_cloze[h.cloze], h.answers))
        else:
            sh.append(is_answer(outs_asked[qa_prompt(h.question, SINGLE_HOP_DEMOS)], "few-shot", h.answers))
    mh = [is_answer(o, prompting, answers) for o in outs_multi]
    return MultiHopOutcome(id, ew, sh, mh, list(outs_multi), prompting)


def case_hops(case) -> list[Hop]:
    """The new single hops of a :class:`editcore.cases.MultiHopCase`; a hop is edited when its cloze is
    one of the edits' statements (compared normalised)."""
    edited = {normalise(c.edit_prompt) for c in case.edits}
    return [Hop(p.prompt, p.question, p.answers, normalise(p.prompt) in edited) for p in case.new_single_hops]


def edit_targets(case) -> list[tuple[str, tuple[str, ...]]]:
    """(cloze, accepted targets) per edit: the new target plus the aliases its hop lists."""
    aliases = {normalise(p.prompt): p.aliases for p in case.new_single_hops}
    return [(c.edit_prompt, (c.target_new, *aliases.get(normalise(c.edit_prompt), ()))) for c in case.edits]


def multihop_case_outcome(scorer, case, prompting: str = "few-shot") -> MultiHopOutcome:
    """Adapter from :class:`editcore.cases.MultiHopCase` (the edits must already be applied)."""
    return multihop_outcome(scorer, case.id, edit_targets(case), case_hops(case), case.questions,
                            [case.new_answer, *case.new_answer_aliases], prompting)


def _pooled_edits(outcomes: Sequence[MultiHopOutcome]) -> CI:
    return bootstrap_ci([float(x) for o in outcomes for x in o.edit_wise])


@dataclass
class MultiHopSummary(ItemSummary):
    outcomes: list[MultiHopOutcome]
    ew: CI = field(init=False)  # pooled over every edit of every instance (n = edits)
    iw: CI = ci_of(lambda o: float(o.iw))
    mh: CI = ci_of(lambda o: float(o.mh))
    matching: str = ("cloze: greedy continuation starts with the answer or an alias; questions: the answer "
                     "line equals the answer or an alias (normalised)")

    def __post_init__(self):
        super().__post_init__()
        self.ew = _pooled_edits(self.outcomes)
