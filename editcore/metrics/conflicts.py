"""Knowledge conflicts and distortion (Li et al. 2024, "Unveiling the Pitfalls of Knowledge Editing for
Large Language Models", ICLR 2024; definitions as in their released evaluation code,
zjunlp/PitfallsKnowledgeEditing ``experiments/summarize.py``).

Notation: θ the unedited model, θ' after edit 1, θ'' after edit 1 then edit 2. P(q → o) is the
probability of object o for query q, averaged over the query's prompts (the edit prompt plus the
relation's templates, all of them, as the released code does: a template that repeats the edit prompt counts
twice). The released code measures each prompt as exp(−mean token NLL)
(``convention="rome_mean_nll"``, the default here); ``"product"`` uses the product of token probabilities.

ConflictEdit (two edits that contradict each other; q1/o1 = edit 1's query and new object):

* Conflict Score  CS  = mean over cases of 1[P_θ''(q2 → o2) > P_θ''(q1 → o1)] (strict; ties fail), in two
  variants that differ in (q2, o2):
  - **explicit** (``cs``, the default, as the released scripts run: ``evaluate_conflictedit.py`` with
    ``explicit=True``): edit 2's own query and new object;
  - **implicit** (``cs_implicit``): what edit 2 implies for edit 1's query — reverse: edit 1's relation
    asked of edit 2's new object, answered with o1; composite: edit 1's query answered with edit 2's new
    object; coverage: edit 2's own fact (the two variants coincide);
* Coverage success  Succ (coverage only; the paper's coverage column) = 1[P_θ2(q2 → o2) > P_θ2(q1 → o1)]
  with θ2 the unedited model after edit 2 *alone* (the baseline CS is compared with);
* Conflict Magnitude  CM  = mean of max((P_θ'(q1 → o1) − P_θ''(q1 → o1)) / P_θ'(q1 → o1), −1);
* Tied-Fact Damage  TFD (composite only; "FFD" in the code) = mean of (P_θ(f) − P_θ''(f)) / P_θ(f) for the
  tied fact f (the rule's premise that no edit touches).

RoundEdit (edit o → o', then o' → o; ``others`` = the subject's other true objects):

* Success = ½·1[P_θ'(o') > P_θ'(o)] + ½·1[P_θ''(o) > P_θ''(o')];
* Distortion D = JS( norm[P_θ''(o), P_θ''(others)] ‖ norm[P_θ(o), P_θ(others)] ) — the true JS in nats;
  the released code uses ``KLDivLoss(reduction='batchmean')`` on 1-D vectors, i.e. divides by the number of
  objects: ``n_objects`` is stored so a reader can convert;
* Ignore Rate IR = fraction of ``others`` whose probability fell (P_θ(x) > P_θ''(x));
* Failure Rate FR = fraction of cases with IR > 0.5.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

from ..types import Request
from .scoring import Scorer
from .numeric import CI, PROB_FLOOR, ItemSummary, ci_of, js_divergence, mean

ComputePatch = Callable[[object, Request], object]  # (lm, request) -> Patch


# ---- pure formulas ------------------------------------------------------------------------------------

def conflict_magnitude(p1_o1: float, p2_o1: float) -> float:
    """max((P_θ'(o1) − P_θ''(o1)) / P_θ'(o1), −1); P_θ'(o1) floored at PROB_FLOOR."""
    return max((p1_o1 - p2_o1) / max(p1_o1, PROB_FLOOR), -1.0)


def tied_fact_damage(p0: float, p2: float) -> float:
    """(P_θ(f) − P_θ''(f)) / P_θ(f) (unclamped, as released); P_θ(f) floored at PROB_FLOOR."""
    return (p0 - p2) / max(p0, PROB_FLOOR)


def round_success(p1_new: float, p1_old: float, p2_old: float, p2_new: float) -> float:
    return 0.5 * (p1_new > p1_old) + 0.5 * (p2_old > p2_new)


def ignore_rate(others_pre: Sequence[float], others_post: Sequence[float]) -> float:
    if not others_pre:
        return 0.0
    return sum(a > b for a, b in zip(others_pre, others_post)) / len(others_pre)


# ---- queries ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Query:
    prompts: tuple[str, ...]  # filled prompts (subject in place)
    target: str


def query(template: str, subject: str, target: str, extra_templates: Sequence[str] = ()) -> Query:
    return Query((template.format(subject), *(t.format(subject) for t in extra_templates)), target)


def prob(scorer: Scorer, q: Query, convention: str) -> float:
    """P(q → target) averaged over the query's prompts (see the module docstring)."""
    scores = scorer.pairs(list(q.prompts), [q.target] * len(q.prompts))
    return mean([s.value(convention) for s in scores])


# ---- ConflictEdit ---------------------------------------------------------------------------------------

@dataclass
class ConflictSpec:
    id: str
    type: str
    edit1: Request
    edit2: Request
    q1: Query  # edit 1's query -> o1
    q2: Query  # explicit: edit 2's own query -> o2
    q2_implicit: Query  # what edit 2 implies for edit 1's query
    tied: Query | None = None


@dataclass
class ConflictOutcome:
    id: str
    type: str
    convention: str
    p1_o1: float
    p2_o1: float
    p2_o2: float  # explicit q2
    p0_tied: float | None
    p2_tied: float | None
    p2_o2_implicit: float | None = None
    alone_o1: float | None = None  # coverage: edit 2 alone, P(q1 -> o1) and P(q2 -> o2)
    alone_o2: float | None = None
    conflict: bool = field(init=False)
    conflict_implicit: bool | None = field(init=False)
    success: bool | None = field(init=False)
    magnitude: float = field(init=False)
    tied_damage: float | None = field(init=False)

    def __post_init__(self):
        self.conflict = self.p2_o2 > self.p2_o1
        self.conflict_implicit = None if self.p2_o2_implicit is None else self.p2_o2_implicit > self.p2_o1
        self.success = None if self.alone_o2 is None or self.alone_o1 is None else self.alone_o2 > self.alone_o1
        self.magnitude = conflict_magnitude(self.p1_o1, self.p2_o1)
        self.tied_damage = (tied_fact_damage(self.p0_tied, self.p2_tied)
                            if self.p0_tied is not None and self.p2_tied is not None else None)


def _conflict_queries(kind: str, r1: Request, r2: Request, t1: Sequence[str], t2: Sequence[str]
                      ) -> tuple[Query, Query, Query]:
    """q1 (edit 1's query and new object), explicit q2 (edit 2's own) and implicit q2 (what edit 2 implies
    for q1, by conflict type; see the module docstring); ``t1``/``t2`` are the templates of each edit's
    relation."""
    q1 = query(r1.prompt, r1.subject, r1.target_new, t1)
    explicit = query(r2.prompt, r2.subject, r2.target_new, t2)
    if kind == "coverage":
        return q1, explicit, explicit
    if kind == "reverse":
        return q1, explicit, query(r1.prompt, r2.target_new, r1.target_new, t1)
    if kind == "composite":
        return q1, explicit, query(r1.prompt, r1.subject, r2.target_new, t1)
    raise ValueError(f"unknown conflict type {kind!r}")


def conflict_spec_from_record(record: dict, templates: dict[str, Sequence[str]], id: str = "") -> ConflictSpec:
    """From a raw ConflictEdit record (``../shared/data/pitfalls/*_edit.json``) and ``conflict_prompts.json``."""
    def req(e):
        return Request(e["relation"]["prompt"], e["subject"]["label"], e["new_object"]["label"], e["object"]["label"])

    e1, e2 = record["edits"]
    r1, r2 = req(e1), req(e2)
    kind = record["type"]
    q1, q2, q2i = _conflict_queries(kind, r1, r2, templates.get(e1["relation"]["id"], ()),
                                    templates.get(e2["relation"]["id"], ()))
    tied = None
    if kind == "composite":
        f = record["triples"][0]
        tied = query(f["relation"]["prompt"], f["subject"]["label"], f["object"]["label"],
                     templates.get(f["relation"]["id"], ()))
    return ConflictSpec(id or str(record.get("rule", "")), kind, r1, r2, q1, q2, q2i, tied)


def conflict_spec_from_case(case, templates: dict[str, Sequence[str]] | None = None) -> ConflictSpec:
    """From :class:`editcore.cases.ConflictCase` (its own per-relation templates unless given)."""
    c1, c2 = case.edits
    r1, r2 = c1.request(), c2.request()

    def tpl(rel):
        return (templates or {}).get(rel, case.prompts_for(rel))

    q1, q2, q2i = _conflict_queries(case.type, r1, r2, tpl(c1.relation_id), tpl(c2.relation_id))
    tied = None
    if case.type == "composite" and case.tied:
        t = case.tied[0]
        tied = Query((t.prompt,), t.answer)
    return ConflictSpec(case.id, case.type, r1, r2, q1, q2, q2i, tied)


def run_conflict(lm, spec: ConflictSpec, compute_patch: ComputePatch, *, convention: str = "rome_mean_nll"
                 ) -> ConflictOutcome:
    """Edit 1, then edit 2 (each computed on the model as it is at that point), inside one scope that
    restores the model afterwards; for coverage also edit 2 alone on the unedited model (Succ). Returns the
    probabilities the formulas need."""
    alone = (None, None)
    with lm.scope() as s:
        p0_tied = prob(Scorer(lm), spec.tied, convention) if spec.tied else None
        if spec.type == "coverage":
            with lm.scope() as only:
                only.apply(compute_patch(lm, spec.edit2))
                sc = Scorer(lm)
                alone = (prob(sc, spec.q1, convention), prob(sc, spec.q2, convention))
        s.apply(compute_patch(lm, spec.edit1))
        p1_o1 = prob(Scorer(lm), spec.q1, convention)
        s.apply(compute_patch(lm, spec.edit2))
        post = Scorer(lm)
        p2_o1, p2_o2 = prob(post, spec.q1, convention), prob(post, spec.q2, convention)
        p2_o2i = p2_o2 if spec.q2_implicit == spec.q2 else prob(post, spec.q2_implicit, convention)
        p2_tied = prob(post, spec.tied, convention) if spec.tied else None
    return ConflictOutcome(spec.id, spec.type, convention, p1_o1, p2_o1, p2_o2, p0_tied, p2_tied, p2_o2i, *alone)


@dataclass
class ConflictSummary(ItemSummary):
    outcomes: list[ConflictOutcome]
    cs: CI = ci_of(lambda o: float(o.conflict))  # explicit (the default; see the module docstring)
    cs_implicit: CI = ci_of(lambda o: None if o.conflict_implicit is None else float(o.conflict_implicit))
    cm: CI = ci_of(lambda o: o.magnitude)
    tfd: CI = ci_of(lambda o: o.tied_damage)
    succ: CI = ci_of(lambda o: None if o.success is None else float(o.success))  # coverage only
    cs_variant: str = "explicit: edit 2's own fact (the released scripts' default); cs_implicit: what edit 2 implies"

    def to_dict(self) -> dict:
        return asdict(self)


# ---- RoundEdit ------------------------------------------------------------------------------------------

@dataclass
class RoundSpec:
    id: str
    forward: Request  # o -> o'
    backward: Request  # o' -> o
    templates: tuple[str, ...]
    others: tuple[str, ...]


def _round_spec(id: str, prompt: str, subject: str, old: str, new: str, templates: Sequence[str],
                true_objects: Sequence[str]) -> RoundSpec:
    """The edit old -> new and its reversal; ``others`` are the true objects besides ``old``."""
    return RoundSpec(id, Request(prompt, subject, new, old), Request(prompt, subject, old, new), tuple(templates),
                     tuple(t for t in true_objects if t != old))


def round_spec_from_record(record: dict, templates: dict[str, Sequence[str]], id: str = "") -> RoundSpec:
    """From a raw RoundEdit record (``easy.json`` / ``hard.json``) and ``round_prompts.json``."""
    e = record["edit"]
    return _round_spec(id or record.get("type", ""), e["relation"]["prompt"], e["subject"]["label"],
                       e["object"]["label"], e["new_object"]["label"], templates.get(e["relation"]["id"], ()),
                       [t["label"] for t in record.get("true_objects", ())])


def round_spec_from_case(case) -> RoundSpec:
    """From :class:`editcore.cases.RoundTripCase`."""
    return _round_spec(case.id, case.prompt, case.subject, case.object, case.new_object, case.prompts,
                       case.true_objects)


@dataclass
class RoundOutcome:
    id: str
    convention: str
    p1_new: float
    p1_old: float
    p2_old: float
    p2_new: float
    p0_old: float
    others_pre: list[float]
    others_post: list[float]
    success: float = field(init=False)
    distortion: float = field(init=False)
    ignore_rate: float = field(init=False)
    failed: bool = field(init=False)
    n_objects: int = field(init=False)

    def __post_init__(self):
        self.success = round_success(self.p1_new, self.p1_old, self.p2_old, self.p2_new)
        self.distortion = js_divergence([self.p2_old, *self.others_post], [self.p0_old, *self.others_pre])
        self.ignore_rate = ignore_rate(self.others_pre, self.others_post)
        self.failed = self.ignore_rate > 0.5
        self.n_objects = 1 + len(self.others_pre)


def run_roundtrip(lm, spec: RoundSpec, compute_patch: ComputePatch, *, convention: str = "rome_mean_nll"
                  ) -> RoundOutcome:
    def q(req: Request, target: str) -> Query:
        return query(req.prompt, req.subject, target, spec.templates)

    f = spec.forward
    with lm.scope() as s:
        pre = Scorer(lm)
        p0_old = prob(pre, q(f, f.target_true), convention)
        others_pre = [prob(pre, q(f, o), convention) for o in spec.others]
        s.apply(compute_patch(lm, spec.forward))
        mid = Scorer(lm)
        p1_new, p1_old = prob(mid, q(f, f.target_new), convention), prob(mid, q(f, f.target_true), convention)
        s.apply(compute_patch(lm, spec.backward))
        post = Scorer(lm)
        p2_old, p2_new = prob(post, q(f, f.target_true), convention), prob(post, q(f, f.target_new), convention)
        others_post = [prob(post, q(f, o), convention) for o in spec.others]
    return RoundOutcome(spec.id, convention, p1_new, p1_old, p2_old, p2_new, p0_old, others_pre, others_post)


@dataclass
class RoundSummary(ItemSummary):
    outcomes: list[RoundOutcome]
    success: CI = ci_of(lambda o: o.success)
    distortion: CI = ci_of(lambda o: o.distortion)
    ir: CI = ci_of(lambda o: o.ignore_rate)
    fr: CI = ci_of(lambda o: float(o.failed))
