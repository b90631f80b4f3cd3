"""`report:`: the course's questions, each answered from two experiments' test accuracies (all their seeds)."""

from __future__ import annotations

from cnnlab.schema import Fraction, section


@section
class Comparison:
    question: str
    baseline: str
    candidate: str


@section
class ReportConfig:
    # A difference is reported as significant when Welch's t-test gives a p-value below this (two-sided).
    significance: Fraction = 0.05
    comparisons: tuple[Comparison, ...] = ()
