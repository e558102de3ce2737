"""Every weight-editing method gives the recorded loss curves and updates on every tiny family (tests/golden.py).

A refactoring must leave these unchanged; an intended change of results regenerates the file and says why."""

import json

import pytest

import golden


def _close(a, b, path=""):
    if isinstance(a, dict):
        assert sorted(a) == sorted(b), path
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{path}[{i}]")
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-7), path
    else:
        assert a == b, path


def test_edits_equal_the_recorded_ones():
    expected = json.loads(golden.GOLDEN.read_text())
    got = golden.record()
    _close(got, expected)


def test_the_comparison_can_fail():
    expected = json.loads(golden.GOLDEN.read_text())
    key = next(iter(expected))
    name = next(iter(expected[key]["deltas"]))
    changed = json.loads(json.dumps(expected))
    changed[key]["deltas"][name]["norm"] *= 1.001
    with pytest.raises(AssertionError):
        _close(changed, expected)
