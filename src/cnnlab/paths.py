"""Where each stage reads and writes; dvc.yaml declares the same paths."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Layout:
    root: Path = Path(".")

    def raw(self, dataset: str) -> Path:
        return self.root / "data" / "raw" / dataset

    def prepared(self, dataset: str) -> Path:
        return self.root / "data" / "prepared" / dataset

    def features(self, transfer: str) -> Path:
        """A frozen backbone's outputs for every image of a transfer experiment's dataset."""
        return self.root / "data" / "features" / transfer

    def model_dir(self, experiment: str) -> Path:
        return self.root / "models" / experiment

    def resume_file(self, experiment: str) -> Path:
        """Training state saved between epochs; not a DVC output, so it survives a killed stage."""
        return self.root / ".cnnlab" / "resume" / f"{experiment}.pt"

    def metrics(self, experiment: str) -> Path:
        return self.root / "metrics" / f"{experiment}.json"

    @property
    def metrics_dir(self) -> Path:
        return self.root / "metrics"

    def history(self, experiment: str) -> Path:
        return self.root / "reports" / experiment / "history.json"

    def confusion_records(self, experiment: str) -> Path:
        return self.root / "reports" / experiment / "confusion.json"

    def figures(self, experiment: str) -> Path:
        return self.root / "reports" / experiment / "figures"

    @property
    def summary_json(self) -> Path:
        return self.root / "reports" / "summary.json"

    @property
    def summary_markdown(self) -> Path:
        return self.root / "reports" / "summary.md"

    @property
    def report_figures(self) -> Path:
        return self.root / "reports" / "figures"
