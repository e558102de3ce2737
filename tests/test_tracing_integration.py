"""Causal tracing on the real default model (Gemma-3-270M): ten known catalog facts."""

import pytest

from editcore.tracing.settings import TraceSettings
from editcore.tracing.summary import average, categories, strongest
from editcore.tracing.trace import trace_cached

pytestmark = pytest.mark.integration


def test_where_the_strongest_mlp_effect_sits_on_ten_known_facts(gemma):
    from editcore.perfbench import known_facts

    facts = known_facts(gemma, 10)
    assert len(facts) == 10
    traces = []
    with gemma.scope():
        for f in facts:
            r = f.request
            traces.append(trace_cached(gemma, r.prompt, r.subject, r.target_true, TraceSettings()))
    for tr in traces:
        assert tr["engine"] == "replay"
        assert tr["high"] > tr["low"]  # noising the subject lowers the answer's probability on every known fact
        hidden = tr["kinds"]["hidden"]["scores"]
        assert hidden[-1][-1] == pytest.approx(tr["high"], rel=1e-4)  # the last clean state gives it back
    summ = average(traces)
    at_last = [strongest(t)[0] == t["subject_last"] for t in traces]
    assert summ["strongest_mlp_at_subject_last"] == sum(at_last)
    # Reported, not asserted: the paper's claim is about averages on GPT-2 XL / GPT-J, not every fact here.
    where = [categories(t) for t in traces]
    print(f"strongest MLP effect at the subject's last token in {sum(at_last)} of {len(traces)} facts; "
          f"per fact (token, layer): {[strongest(t) for t in traces]}; subject's last tokens: "
          f"{[w['last subject token'][0] for w in where]}")
