"""The training progress bar. It draws on the terminal and never changes a result, so no DVC stage
depends on this file (see cnnlab_tools/stage_deps.py)."""

from __future__ import annotations

import math
import sys
import time

from tqdm import tqdm

# A run is worth an estimate once it has run this long (the first steps pay for warm-up) and when what is
# left would take longer than LONG_RUN_SECONDS.
ESTIMATE_AFTER_SECONDS = 10.0
LONG_RUN_SECONDS = 120.0


def format_duration(seconds: float) -> str:
    """A duration as a person says it: "40 s", "12 min", "3 h 05 min"."""
    if seconds < 60:
        return f"{math.ceil(seconds)} s"
    minutes = math.ceil(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


class Progress:
    """A tqdm bar per epoch; for one-batch epochs (full-batch training) one bar for the run."""

    def __init__(
        self, epochs: int, images_per_epoch: int, steps_per_epoch: int, enabled: bool, first_epoch: int = 1
    ) -> None:
        self.per_run = steps_per_epoch == 1
        self.epochs, self.images, self.enabled = epochs, images_per_epoch, enabled
        self.bar: tqdm | None = None
        self.first_epoch = first_epoch
        self.started: float | None = None  # when this run (not the epoch) started; set by its first epoch
        self.estimated = False
        if self.per_run:
            self.bar = tqdm(
                total=epochs,
                initial=first_epoch - 1,
                unit="epoch",
                desc="train",
                disable=not enabled,
                dynamic_ncols=True,
            )

    def start_epoch(self, epoch: int) -> None:
        if self.started is None:
            self.started = time.perf_counter()
        if not self.per_run:
            self.bar = tqdm(
                total=self.images,
                unit="img",
                desc=f"epoch {epoch}/{self.epochs}",
                disable=not self.enabled,
                dynamic_ncols=True,
            )

    def step(self, images: int) -> None:
        if not self.per_run and self.bar is not None:
            self.bar.update(images)

    def show(self, loss: float, accuracy: float, images_per_second: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}", acc=f"{accuracy:.3f}", img_s=f"{images_per_second:,.0f}")

    def estimate(self, epoch: int, images_this_epoch: int, seconds: float | None = None) -> None:
        """Once per run, when it has run ESTIMATE_AFTER_SECONDS (`seconds`, by default since its first epoch
        started, so runs of short epochs get one too): how long the rest will take at the rate so far."""
        if self.estimated or not self.enabled or self.started is None:
            return
        seconds = time.perf_counter() - self.started if seconds is None else seconds
        images_done = (epoch - self.first_epoch) * self.images + images_this_epoch
        if seconds < ESTIMATE_AFTER_SECONDS or images_done == 0:
            return
        self.estimated = True
        rate = images_done / seconds
        images_left = (self.epochs - epoch + 1) * self.images - images_this_epoch
        if images_left / rate < LONG_RUN_SECONDS:
            return
        tqdm.write(
            f"estimate: about {format_duration(images_left / rate)} to go for the {self.epochs - epoch + 1} "
            f"epoch(s) left of {self.images:,} images, at the {rate:,.0f} img/s of its first {seconds:.0f} s",
            file=sys.stderr,
        )

    def end_epoch(self) -> None:
        if self.per_run and self.bar is not None:
            self.bar.update(1)
        elif self.bar is not None:
            self.bar.close()

    def close(self) -> None:
        if self.per_run and self.bar is not None:
            self.bar.close()
