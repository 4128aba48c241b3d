from __future__ import annotations

import pytest

from dnstls.proto.ratelimit import LogBudget


def test_burst_passes_then_lines_are_counted_until_the_next_interval() -> None:
    budget = LogBudget(burst=3, interval=5.0)
    assert [budget.allow(100.0 + i * 0.1) for i in range(5)] == [0, 0, 0, None, None]
    assert budget.suppressed == 2
    assert budget.allow(104.9) is None  # still inside the interval that began at 100.0
    assert budget.allow(105.0) == 3  # a new interval: passes and reports the three
    assert budget.suppressed == 0
    assert [budget.allow(105.1), budget.allow(105.2), budget.allow(105.3)] == [0, 0, None]


def test_a_quiet_source_is_never_suppressed() -> None:
    budget = LogBudget(burst=1, interval=1.0)
    assert all(budget.allow(float(t)) == 0 for t in range(100))


@pytest.mark.parametrize(("burst", "interval"), [(0, 1.0), (1, 0.0), (5, -1.0)])
def test_bad_parameters(burst: int, interval: float) -> None:
    with pytest.raises(ValueError, match="burst"):
        LogBudget(burst, interval)
