"""Smoothed throughput, and the ETA taken from it. The rate between two reports is noisy (an
eval, a checkpoint, a slow batch), and an ETA computed from it jumps back and forth (1 s, 8 s,
9 s at 72-75 %). An exponentially weighted mean of the rate, weighted by the time each sample
covers (time constant `tau` seconds), moves smoothly and still follows a real change of speed
within a few `tau`."""

from __future__ import annotations

import math
from dataclasses import dataclass

TAU_SECONDS = 20.0


@dataclass
class SmoothedRate:
    """Units per second (samples, steps): `update` folds in one measurement, `eta` uses the mean."""

    tau: float = TAU_SECONDS
    rate: float | None = None

    def update(self, amount: float, seconds: float) -> float:
        """Fold in `amount` units done in `seconds`; the first measurement seeds the mean."""
        if seconds <= 0 or amount < 0:
            return self.rate or 0.0
        sample = amount / seconds
        weight = 1.0 - math.exp(-seconds / self.tau)  # a longer measurement counts for more
        self.rate = sample if self.rate is None else self.rate + weight * (sample - self.rate)
        return self.rate

    def eta(self, remaining: float) -> float | None:
        """Seconds until `remaining` units are done at the smoothed rate; None before a measurement."""
        if not self.rate:
            return None
        return max(0.0, remaining) / self.rate
