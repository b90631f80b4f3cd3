"""`report:`: the course's questions, each answered from two experiments' test accuracy."""

from __future__ import annotations

from cnnlab.schema import NonNegativeFloat, section


@section
class Comparison:
    question: str
    baseline: str
    candidate: str


@section
class ReportConfig:
    tolerance_points: NonNegativeFloat = 1.0  # accuracy gaps below this many points count as "about the same"
    comparisons: tuple[Comparison, ...] = ()
