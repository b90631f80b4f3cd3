"""How sure the report can be: an experiment's seeds summarised, and two experiments compared.

Two experiments' seeds are independent samples (seed 3 of the FC net and seed 3 of the CNN share a number,
not an initialisation), with spreads of their own (one epoch of the FC net varies by points, the CNN by
tenths), and a handful of them each. That is the case Welch's t-test is made for: it assumes neither equal
variances nor pairs, and its t distribution widens the interval for small samples where a bootstrap of five
values would understate it. Its assumption, roughly normal accuracies over seeds, is the usual one for
seed-to-seed noise.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from scipy import stats

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Spread:
    """Seeds' values of one measure: their mean, sample standard deviation and the interval of the mean."""

    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def sd(self) -> float | None:
        return statistics.stdev(self.values) if self.n > 1 else None

    def interval(self) -> tuple[float, float] | None:
        """The 95% confidence interval of the mean (Student's t); None from one value."""
        if self.sd is None:
            return None
        half = stats.t.ppf((1 + CONFIDENCE) / 2, self.n - 1) * self.sd / math.sqrt(self.n)
        return self.mean - half, self.mean + half


@dataclass(frozen=True)
class Difference:
    """candidate's mean minus baseline's, with Welch's 95% interval and two-sided p-value where both sides
    have two values or more (else `low`, `high` and `p_value` are None: no interval can be given)."""

    difference: float
    low: float | None
    high: float | None
    p_value: float | None

    def significant(self, level: float) -> bool | None:
        return None if self.p_value is None else self.p_value < level


def welch(baseline: Spread, candidate: Spread) -> Difference:
    difference = candidate.mean - baseline.mean
    if baseline.sd is None or candidate.sd is None:
        return Difference(difference, None, None, None)
    if baseline.sd == 0 and candidate.sd == 0:  # every seed scored alike on both sides: nothing varies
        return Difference(difference, difference, difference, 1.0 if difference == 0 else 0.0)
    result = stats.ttest_ind(candidate.values, baseline.values, equal_var=False)
    interval = result.confidence_interval(CONFIDENCE)
    return Difference(difference, float(interval.low), float(interval.high), float(result.pvalue))
