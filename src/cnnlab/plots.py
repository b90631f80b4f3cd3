"""PNG figures for the evaluate and report stages (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from cnnlab.io import replaced_atomically

REGION_GRID = 300  # points per axis of the decision-region plot


def _save(figure: plt.Figure, path: Path) -> None:
    with replaced_atomically(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)


def confusion_png(confusion: list[list[int]], class_names: tuple[str, ...], title: str, path: Path) -> None:
    matrix = torch.tensor(confusion, dtype=torch.float64)
    size = max(4.0, 0.5 * len(class_names) + 2)
    figure, axes = plt.subplots(figsize=(size, size))
    axes.imshow(matrix / matrix.sum(dim=1, keepdim=True).clamp_min(1), cmap="Blues", vmin=0, vmax=1)
    ticks = range(len(class_names))
    axes.set_xticks(ticks, class_names, rotation=45, ha="right")
    axes.set_yticks(ticks, class_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    if len(class_names) <= 20:
        threshold = matrix.max().item() / 2
        for i in ticks:
            for j in ticks:
                value = int(matrix[i, j])
                axes.text(
                    j,
                    i,
                    str(value),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if value > threshold else "black",
                )
    _save(figure, path)


def region_grid(inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The plane around 2-D `inputs` as two (REGION_GRID, REGION_GRID) coordinate grids (x, y)."""
    low, high = inputs.min(dim=0).values - 0.2, inputs.max(dim=0).values + 0.2
    xs, ys = torch.linspace(low[0], high[0], REGION_GRID), torch.linspace(low[1], high[1], REGION_GRID)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return grid_x, grid_y


def decision_regions_png(
    grid_x: torch.Tensor,
    grid_y: torch.Tensor,
    regions: torch.Tensor,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    title: str,
    path: Path,
) -> None:
    """The class each point of `region_grid` gets (`regions`), with the test points on top (2-D inputs only)."""
    figure, axes = plt.subplots(figsize=(5.5, 5))
    axes.contourf(grid_x, grid_y, regions, levels=int(targets.max()) + 1, cmap="Spectral", alpha=0.35)
    axes.scatter(inputs[:, 0], inputs[:, 1], c=targets, s=4, cmap="Spectral")
    axes.set_aspect("equal")
    axes.set_title(title)
    _save(figure, path)


def image_grid_png(images: torch.Tensor, captions: list[str], title: str, path: Path) -> None:
    """uint8 images (N,C,H,W) in a row-major grid, each with its caption underneath."""
    count = len(images)
    columns = min(count, 8) or 1
    rows = max(1, -(-count // columns))
    figure, axes_grid = plt.subplots(rows, columns, figsize=(1.6 * columns, 1.9 * rows + 0.4), squeeze=False)
    for axes in axes_grid.flat:
        axes.axis("off")
    # A grid may have more axes than images: the rest stay blank.
    for axes, image, caption in zip(axes_grid.flat, images, captions, strict=False):
        picture = image.permute(1, 2, 0).numpy()
        axes.imshow(
            picture[..., 0] if picture.shape[-1] == 1 else picture, cmap="gray" if picture.shape[-1] == 1 else None
        )
        axes.set_title(caption, fontsize=7)
    figure.suptitle(title if count else f"{title}: none", fontsize=9)
    _save(figure, path)


def scatter_png(points: list[tuple[str, float, float]], title: str, x_label: str, path: Path) -> None:
    """(label, x, accuracy) points on a log x axis, each point labelled."""
    figure, axes = plt.subplots(figsize=(7, 4.5))
    shown = [(label, x, 100 * y) for label, x, y in points if x > 0]
    axes.scatter([x for _, x, _ in shown], [y for _, _, y in shown], s=30)
    for label, x, y in shown:
        axes.annotate(label, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    axes.set_xscale("log")
    axes.set_xlabel(x_label)
    axes.set_ylabel("test accuracy (%)")
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    _save(figure, path)


def seeds_png(groups: list[tuple[str, list[float], tuple[float, float] | None]], title: str, path: Path) -> None:
    """Per (label, accuracies, interval of their mean): each accuracy a point, the mean a bar across them and
    the interval a vertical line (none from one seed)."""
    figure, axes = plt.subplots(figsize=(max(4.0, 1.2 * len(groups) + 1), 4.5))
    for position, (_, values, interval) in enumerate(groups):
        shown = [100 * v for v in values]
        offsets = torch.linspace(-0.1, 0.1, len(shown)) if len(shown) > 1 else torch.zeros(1)
        axes.scatter((position + offsets).tolist(), shown, s=18, alpha=0.7)
        mean = sum(shown) / len(shown)
        axes.hlines(mean, position - 0.2, position + 0.2, colors="black")
        if interval is not None:
            axes.vlines(position + 0.25, 100 * interval[0], 100 * interval[1], colors="black", linewidth=2)
    axes.set_xticks(range(len(groups)), [label for label, _, _ in groups], rotation=20, ha="right", fontsize=8)
    axes.set_ylabel("test accuracy (%)")
    axes.set_title(title, fontsize=10)
    axes.grid(True, axis="y", alpha=0.3)
    _save(figure, path)
