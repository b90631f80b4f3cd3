"""When training has diverged, so that it stops early instead of training a dead network to the end.

The rule: a run has diverged at the first step whose loss is NaN or infinite, or at the end of the first
window of WINDOW_STEPS steps (counted over the whole run from its first step) whose mean loss is more than
FACTOR times the loss of the run's first step. The first step's loss is the untrained model's, about
ln(classes) for cross-entropy (2.30 for ten classes): a model that does FACTOR times worse than that on
average over a whole window has left training, not wobbled. Learning-rate warm-ups and spikes of a few
steps stay far below it (a single step at 20x the start, the rest normal, averages 2.9x over a window), and
the course's settings never approach it; mnist_fc at lr 1e6 crosses it in its first window (its loss
reaches 1e31).

The watch runs on the device (no host sync per step); the training loop reads it when it reads the loss
anyway, about once a second and at the end of each epoch. Where a run diverged is decided by its steps'
losses alone, so the same run diverges at the same step, whenever the host looks.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

FACTOR = 10.0
WINDOW_STEPS = 10


@dataclass(frozen=True)
class Divergence:
    """Where and how a run diverged. `step` counts over the whole run, from 1."""

    epoch: int
    step: int
    loss: float  # the window's mean loss, or the step's non-finite loss
    first_loss: float  # the run's first step's loss

    def describe(self) -> str:
        if not math.isfinite(self.loss):
            how = f"the loss became {self.loss} at step {self.step} (epoch {self.epoch})"
        else:
            how = (
                f"the mean loss of steps {self.step - WINDOW_STEPS + 1}-{self.step} (epoch {self.epoch}) was "
                f"{self.loss:.3g}, over {FACTOR:g}x the first step's {self.first_loss:.3g}"
            )
        return f"training diverged: {how}"

    def to_json(self) -> dict[str, object]:
        return {**asdict(self), "loss": repr(self.loss) if not math.isfinite(self.loss) else self.loss}


class DivergenceWatch:
    """Tensors on the training device that record the first step at which the rule above trips."""

    def __init__(self, device: torch.device) -> None:
        self.first_loss = torch.full((), math.nan, device=device)
        self.window_sum = torch.zeros((), device=device)
        self.tripped_at = torch.full((), -1, dtype=torch.long, device=device)
        self.tripped_loss = torch.zeros((), device=device)

    def observe(self, loss: torch.Tensor, step: int) -> None:
        """After the step numbered `step` (over the whole run, from 1) whose mean loss is `loss`."""
        loss = loss.float()
        if step == 1:
            self.first_loss = loss.clone()
        self.window_sum += loss
        tripped = ~torch.isfinite(loss)
        value = loss
        if step % WINDOW_STEPS == 0:
            mean = self.window_sum / WINDOW_STEPS
            tripped = tripped | (mean > FACTOR * self.first_loss)
            value = torch.where(torch.isfinite(loss), mean, loss)
            self.window_sum.zero_()
        first = (self.tripped_at < 0) & tripped
        self.tripped_at = torch.where(first, step, self.tripped_at)
        self.tripped_loss = torch.where(first, value, self.tripped_loss)

    def divergence(self, tripped_at: torch.Tensor, steps_per_epoch: int) -> Divergence | None:
        """What the watch recorded (reads the device); `tripped_at` may be the step agreed across processes."""
        step = int(tripped_at.item())
        if step < 0:
            return None
        loss = float(self.tripped_loss.item()) if int(self.tripped_at.item()) == step else math.nan
        return Divergence((step - 1) // steps_per_epoch + 1, step, loss, float(self.first_loss.item()))

    def state(self) -> list[torch.Tensor]:
        return [self.first_loss, self.window_sum]

    def restore(self, state: list[torch.Tensor]) -> None:
        self.first_loss, self.window_sum = (t.to(self.window_sum.device) for t in state)
