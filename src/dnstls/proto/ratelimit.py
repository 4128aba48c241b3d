"""A log-line budget: at most ``burst`` lines per ``interval`` seconds, the rest counted.

Connection-closing messages (a client over its connection limit, a slow or silent
client) are one line per connection, and since admission is decided at accept a refused
connection costs the server less than its log line does: a flood from one address must
not turn into a flood of log lines. As the kernel's ``printk_ratelimit``: the first
``burst`` lines of each interval pass, the rest are counted, and the next line that
passes says how many were suppressed before it. Totals are in the metrics
(``dnstls_connections_closed_total``) either way.
"""

from __future__ import annotations


class LogBudget:
    __slots__ = ("_passed", "_start", "burst", "interval", "suppressed")

    def __init__(self, burst: int = 10, interval: float = 5.0) -> None:
        if burst < 1 or interval <= 0:
            raise ValueError("a log budget needs burst >= 1 and interval > 0")
        self.burst = burst
        self.interval = interval
        self._start = float("-inf")
        self._passed = 0
        self.suppressed = 0  # since the last line that passed

    def allow(self, now: float) -> int | None:
        """None: drop this line (counted). Otherwise it may be logged, and the number
        returned is how many were dropped since the last one (to be said with it)."""
        if now - self._start >= self.interval:
            self._start = now
            self._passed = 0
        if self._passed >= self.burst:
            self.suppressed += 1
            return None
        self._passed += 1
        dropped, self.suppressed = self.suppressed, 0
        return dropped
