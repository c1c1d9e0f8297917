"""One function's load as 1-second samples: what the autoscaler decides on.

The invoke path only bumps integers (FunctionMetrics: started, finished by status, in flight and
the in-flight peak); once a second the autoscaler turns their deltas into a sample here, so
the windows cost nothing per request.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from runtime.metrics import FunctionMetrics

STABLE_WINDOW_S = 30
PANIC_WINDOW_S = 6
KEEP_SAMPLES = 60


@dataclass(frozen=True, slots=True)
class Sample:
    """One second of one function."""

    started: int = 0
    completed: int = 0
    errors: int = 0  # completed with a 5xx status
    peak_in_flight: int = 0
    millicpu: float = 0.0  # all its replicas together, from the latest CPU sample


class LoadWindow:
    def __init__(self, keep: int = KEEP_SAMPLES) -> None:
        self._samples: deque[Sample] = deque(maxlen=keep)
        self._started = 0
        self._completed = 0
        self._errors = 0
        self._primed = False

    def __len__(self) -> int:
        return len(self._samples)

    @property
    def latest(self) -> Sample | None:
        return self._samples[-1] if self._samples else None

    def observe(self, stats: FunctionMetrics, millicpu: float = 0.0) -> Sample:
        """Take one sample from the function's cumulative counters (call once a second).
        The in-flight peak restarts from the current count."""
        completed = errors = 0
        for status, outcomes in stats.by_code.items():
            completed += outcomes.count
            if status >= 500:
                errors += outcomes.count
        if not self._primed:
            # The first look only learns where the counters stand.
            self._primed = True
            self._started, self._completed, self._errors = stats.started, completed, errors
        sample = Sample(
            started=max(stats.started - self._started, 0),
            completed=max(completed - self._completed, 0),
            errors=max(errors - self._errors, 0),
            peak_in_flight=max(stats.peak_in_flight, stats.in_flight),
            millicpu=millicpu,
        )
        self._started, self._completed, self._errors = stats.started, completed, errors
        stats.peak_in_flight = stats.in_flight
        self.add(sample)
        return sample

    def add(self, sample: Sample) -> None:
        self._samples.append(sample)

    def _last(self, seconds: int) -> list[Sample]:
        samples = self._samples
        count = min(seconds, len(samples))
        return [samples[i] for i in range(len(samples) - count, len(samples))]

    def completed_per_s(self, seconds: int) -> float:
        """Mean completions per second over the last ``seconds`` (those seen, if fewer)."""
        last = self._last(seconds)
        return sum(s.completed for s in last) / len(last) if last else 0.0

    def started_per_s(self, seconds: int) -> float:
        last = self._last(seconds)
        return sum(s.started for s in last) / len(last) if last else 0.0

    def mean_peak_in_flight(self, seconds: int) -> float:
        last = self._last(seconds)
        return sum(s.peak_in_flight for s in last) / len(last) if last else 0.0

    def max_peak_in_flight(self, seconds: int) -> float:
        return float(max((s.peak_in_flight for s in self._last(seconds)), default=0))

    def mean_millicpu(self, seconds: int) -> float:
        last = self._last(seconds)
        return sum(s.millicpu for s in last) / len(last) if last else 0.0

    def load(self, kind: str) -> tuple[float, float]:
        """(stable, panic) load for a scale type: rps = completions/s over the stable window
        and starts/s (demand) over the panic window; capacity = in flight (mean of each
        second's peak; the highest peak for panic); cpu = milli-CPU of all replicas."""
        if kind == "rps":
            return (
                self.completed_per_s(STABLE_WINDOW_S),
                self.started_per_s(PANIC_WINDOW_S),
            )
        if kind == "capacity":
            return (
                self.mean_peak_in_flight(STABLE_WINDOW_S),
                self.max_peak_in_flight(PANIC_WINDOW_S),
            )
        latest = self.latest
        return (self.mean_millicpu(STABLE_WINDOW_S), latest.millicpu if latest else 0.0)
