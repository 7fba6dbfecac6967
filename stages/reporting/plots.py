"""The figures DVC cannot draw (matplotlib, written atomically): test-image panels, the reproduction figure."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no screen on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from stages.core.files import atomic_path  # noqa: E402


def data_label(origin: str) -> str:
    """Every figure made from generated data says so in its title."""
    return " (GENERATED SAMPLE DATA)" if origin.startswith("generated") else ""


def save(fig: plt.Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)


# Segmentation masks: one colour per class (pet, background, border in the pets study)
MASK_COLORS = np.array([[230, 60, 60], [40, 40, 40], [250, 220, 60], [60, 120, 230], [80, 200, 120]], np.uint8)


def color_mask(mask: np.ndarray) -> np.ndarray:
    """(H, W) class ids -> (H, W, 3) RGB."""
    return MASK_COLORS[np.asarray(mask) % len(MASK_COLORS)]


def segmentation_panels(
    images: np.ndarray, truth: np.ndarray, pred: np.ndarray, classes: list[str], title: str, path: Path, n: int = 4
) -> None:
    """The study's figure: random test images, their true masks and the predicted masks."""
    picks = np.random.default_rng(0).choice(len(images), size=min(n, len(images)), replace=False)
    fig, axes = plt.subplots(len(picks), 3, figsize=(7.5, 2.5 * len(picks)), squeeze=False)
    for row, i in zip(axes, picks):
        img = images[i][..., 0] if images[i].shape[-1] == 1 else images[i]
        for ax, panel, label in zip(row, (img, color_mask(truth[i]), color_mask(pred[i])), ("image", "true", "pred")):
            ax.imshow(panel, cmap="gray" if panel.ndim == 2 else None, interpolation="nearest")
            ax.set_title(f"{label} (#{i})", fontsize=8)
            ax.axis("off")
    handles = [plt.Rectangle((0, 0), 1, 1, color=MASK_COLORS[c] / 255) for c in range(len(classes))]
    fig.legend(handles, classes, loc="lower center", ncol=len(classes))
    fig.suptitle(title, fontsize=9)
    save(fig, path)


def prediction_panels(
    images: np.ndarray, truth: np.ndarray, pred: np.ndarray, classes: list[str], title: str, path: Path, n: int = 8
) -> None:
    """Seeded random test images titled true -> predicted class, the mistakes in red."""
    picks = np.sort(np.random.default_rng(0).choice(len(images), size=min(n, len(images)), replace=False))
    fig, axes = plt.subplots(1, len(picks), figsize=(1.6 * len(picks), 2.2), squeeze=False)
    for ax, i in zip(axes[0], picks):
        img = images[i][..., 0] if images[i].shape[-1] == 1 else images[i]
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, interpolation="nearest")
        wrong = truth[i] != pred[i]
        ax.set_title(f"{classes[truth[i]]}\n-> {classes[pred[i]]}", fontsize=7, color="red" if wrong else "black")
        ax.axis("off")
    fig.suptitle(title, fontsize=8)
    save(fig, path)
