"""Prometheus text exposition of a few counters and gauges (no client library needed)."""

from __future__ import annotations


class Metrics:
    def __init__(self) -> None:
        self.counters: dict[str, float] = {}
        self.gauges: dict[str, float] = {}

    def inc(self, name: str, value: float = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + value

    def gauge(self, name: str, value: float) -> None:
        self.gauges[name] = value

    def add_gauge(self, name: str, delta: float) -> None:
        self.gauges[name] = self.gauges.get(name, 0) + delta

    def render(self) -> str:
        lines = []
        for name, value in sorted(self.counters.items()):
            lines.append(f"# TYPE tether_{name} counter")
            lines.append(f"tether_{name} {value}")
        for name, value in sorted(self.gauges.items()):
            lines.append(f"# TYPE tether_{name} gauge")
            lines.append(f"tether_{name} {value}")
        return "\n".join(lines) + "\n"
