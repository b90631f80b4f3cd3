"""The training progress bar. It draws on the terminal and never changes a result, so no DVC stage
depends on this file (see cnnlab_tools/stage_deps.py)."""

from __future__ import annotations

from tqdm import tqdm


class Progress:
    """A tqdm bar per epoch; for one-batch epochs (full-batch training) one bar for the run."""

    def __init__(
        self, epochs: int, images_per_epoch: int, steps_per_epoch: int, enabled: bool, first_epoch: int = 1
    ) -> None:
        self.per_run = steps_per_epoch == 1
        self.epochs, self.images, self.enabled = epochs, images_per_epoch, enabled
        self.bar: tqdm | None = None
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

    def end_epoch(self) -> None:
        if self.per_run and self.bar is not None:
            self.bar.update(1)
        elif self.bar is not None:
            self.bar.close()

    def close(self) -> None:
        if self.per_run and self.bar is not None:
            self.bar.close()
