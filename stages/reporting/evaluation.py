"""Scoring a trained model on the test split: metrics, per-class report, confusion data, sample panels.

The `evaluate@<experiment>` stage (stages/evaluate.py) calls :func:`evaluate` on the test predictions
that `train@<experiment>` saved. Its charts are drawn by DVC (`dvc plots`): the confusion matrix from
``reports/plots/confusion/<experiment>.csv``, the learning curves from dvclive's logs; matplotlib draws
only the panel of test images with their labels or masks, which no DVC template can.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from sklearn import metrics as skm

from stages.core import config
from stages.core.errors import DataError
from stages.core.files import load_npy, write_json, write_text
from stages.core.paths import EXPERIMENT_REPORTS as REPORTS
from stages.core.paths import MODELS, PLOTS, PREPARED
from stages.reporting import plots


def classification_metrics(y_true: np.ndarray, probs: np.ndarray, classes: list[str], top_k: int = 3) -> dict:
    labels = list(range(len(classes)))
    y_pred = probs.argmax(axis=1)
    out = {
        "test_accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "test_loss": float(skm.log_loss(y_true, np.clip(probs, 1e-7, 1), labels=labels)),
        "test_precision_macro": float(
            skm.precision_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)
        ),
        "test_recall_macro": float(skm.recall_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "test_f1_macro": float(skm.f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
    }
    if len(classes) > top_k:
        out[f"test_top{top_k}_accuracy"] = float(skm.top_k_accuracy_score(y_true, probs, k=top_k, labels=labels))
    return out


def top_confusions(cm: np.ndarray, classes: list[str], k: int = 3) -> list[dict]:
    """The ``k`` largest off-diagonal cells (true class taken for predicted class), largest first."""
    off = np.asarray(cm, dtype=np.int64).copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(-off, axis=None, kind="stable")[:k]
    totals = np.maximum(np.asarray(cm).sum(axis=1), 1)
    pairs = [np.unravel_index(i, off.shape) for i in order]
    return [
        {"true": classes[t], "predicted": classes[p], "count": int(off[t, p]), "rate": float(off[t, p] / totals[t])}
        for t, p in pairs
        if off[t, p] > 0
    ]


def pixel_confusion(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Confusion matrix over all pixels (rows: true class, columns: predicted)."""
    idx = y_true.astype(np.int64).ravel() * num_classes + y_pred.astype(np.int64).ravel()
    return np.bincount(idx, minlength=num_classes**2).reshape(num_classes, num_classes)


def segmentation_metrics(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict:
    """Pixel accuracy (the pets study's metric), per-class IoU and Dice, their means over classes.

    A class absent from both truth and prediction has no IoU/Dice (NaN, left out of the means).
    """
    cm = pixel_confusion(y_true, y_pred, len(classes)).astype(np.float64)
    tp, truth, pred = np.diag(cm), cm.sum(axis=1), cm.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = tp / (truth + pred - tp)
        dice = 2 * tp / (truth + pred)
    out = {
        "test_accuracy": float(tp.sum() / max(cm.sum(), 1)),
        "test_mean_iou": float(np.nanmean(iou)) if np.isfinite(iou).any() else 0.0,
        "test_dice_mean": float(np.nanmean(dice)) if np.isfinite(dice).any() else 0.0,
    }
    for c, name in enumerate(classes):
        out[f"test_iou_{name}"] = None if np.isnan(iou[c]) else float(iou[c])
        out[f"test_dice_{name}"] = None if np.isnan(dice[c]) else float(dice[c])
    return out


def evaluate_segmentation(name: str, meta: dict, summary: dict, y_test: np.ndarray) -> dict:
    classes, out = meta["classes"], REPORTS / name
    masks_path = require(MODELS / name / "test_masks.npy", f"train@{name}")
    masks = load_npy(masks_path)
    check_outputs(masks, y_test, len(classes), masks_path, f"train@{name}")
    check_labels(masks, len(classes), masks_path)
    result = segmentation_metrics(y_test, masks, classes)
    # the trivial baseline: every pixel labelled with the most frequent training class
    majority = int(np.bincount(load_npy(PREPARED / meta["dataset"] / "y_train.npy").ravel()).argmax())
    baseline = segmentation_metrics(y_test, np.full_like(y_test, majority), classes)
    result.update(
        test_loss=summary.get("test_loss"),
        baseline_accuracy=baseline["test_accuracy"],
        baseline_mean_iou=baseline["test_mean_iou"],
    )
    result = {k: v for k, v in result.items() if v is not None}
    cm = pixel_confusion(y_test, masks, len(classes))
    report = {
        c: {"iou": result.get(f"test_iou_{c}"), "dice": result.get(f"test_dice_{c}"), "pixels": int(cm[i].sum())}
        for i, c in enumerate(classes)
    }
    label = plots.data_label(meta["data"])
    write_outputs(name, result, summary, len(y_test))
    write_json(out / "classification_report.json", {"data": meta["data"], "unit": "pixels", "classes": report})
    # a seeded sample of pixels for `dvc plots` (all pixels would be millions of rows)
    pick = np.random.default_rng(0).choice(y_test.size, size=min(20_000, y_test.size), replace=False)
    write_predictions(name, classes, y_test.ravel()[pick], masks.ravel()[pick])
    x_test = load_npy(PREPARED / meta["dataset"] / "x_test.npy", mmap=True)
    panels = PLOTS / "samples" / f"{name}.png"
    plots.segmentation_panels(x_test, y_test, masks, classes, f"{name}: test images{label}", panels)
    return result


# The declared DVC metrics: few, and all reproducible exactly (no timings), so that `dvc metrics diff`
# and `dvc exp show` stay one screen and a re-run of unchanged code shows no difference.
HEADLINE = ("test_accuracy", "test_mean_iou", "test_loss", "parameters", "flops", "epochs_run")


def write_outputs(name: str, result: dict, summary: dict, test_images: int) -> None:
    """``metrics.json`` (the headline numbers, a DVC metric) and ``details.json`` (everything else:
    per-class scores, baselines, timings; a plain output)."""
    result = {**result, "parameters": summary["parameters"], "epochs_run": summary["epochs_run"]}
    if "flops" in summary:  # one image's forward pass (stages.models.flops)
        result["flops"] = summary["flops"]
    timings = {k: summary[k] for k in ("train_seconds", "test_seconds")}
    write_json(REPORTS / name / "metrics.json", {k: result[k] for k in HEADLINE if k in result})
    details = {k: v for k, v in result.items() if k not in HEADLINE}
    write_json(REPORTS / name / "details.json", {**details, **timings, "test_images": test_images})


def write_predictions(name: str, classes: list[str], actual: np.ndarray, predicted: np.ndarray) -> None:
    """actual,predicted class names per test image (or sampled pixel), for DVC's confusion plot."""
    rows = ["actual,predicted"] + [f"{classes[a]},{classes[p]}" for a, p in zip(actual, predicted)]
    write_text(PLOTS / "confusion" / f"{name}.csv", "\n".join(rows) + "\n")


def require(path: Path, stage: str) -> Path:
    """``path``, or a DataError naming the stage that writes it."""
    if not path.is_file():
        raise DataError(f"{path}: missing; run `dvc repro {stage}` first")
    return path


def read_json(path: Path, stage: str) -> dict:
    """A JSON file written by ``stage``; DataError in one line when it is missing or corrupt."""
    try:
        return json.loads(require(path, stage).read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON (line {exc.lineno}); re-run `dvc repro {stage}`") from None


def check_labels(y: np.ndarray, num_classes: int, path: Path) -> None:
    """Every label of ``y`` (read from ``path``) is one of the ``num_classes`` classes of meta.json."""
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: labels are {y.dtype}, not integers")
    bad = np.unique(y[(y < 0) | (y >= num_classes)])
    if bad.size:
        raise DataError(f"{path}: labels {bad[:5].tolist()} outside the {num_classes} classes of meta.json")


def check_outputs(array: np.ndarray, y_test: np.ndarray, num_classes: int, path: Path, stage: str) -> None:
    """A model's test outputs (written by ``stage``) match the prepared test split (probabilities: a column a class)."""
    expected = (len(y_test), num_classes) if array.ndim == 2 else y_test.shape
    if array.shape != expected:
        raise DataError(
            f"{path}: shape {array.shape}, expected {expected} (the test split); re-run `dvc repro {stage}`"
        )


def evaluate(params: config.Params, name: str) -> dict:
    exp = config.lookup(params.experiments, name, "experiment")
    prepared = PREPARED / exp.dataset
    meta = read_json(prepared / "meta.json", f"prepare@{exp.dataset}")
    summary = read_json(MODELS / name / "summary.json", f"train@{name}")
    y_path = require(prepared / "y_test.npy", f"prepare@{exp.dataset}")
    y_test = load_npy(y_path)
    check_labels(y_test, len(meta["classes"]), y_path)
    if meta.get("task") == "segmentation":
        return evaluate_segmentation(name, meta, summary, y_test)
    classes, out = meta["classes"], REPORTS / name
    # test-split outputs of the trained model, written by `train` (see the note there)
    probs_path = require(MODELS / name / "test_probs.npy", f"train@{name}")
    probs = load_npy(probs_path)
    check_outputs(probs, y_test, len(classes), probs_path, f"train@{name}")

    result = classification_metrics(y_test, probs, classes)
    y_pred = probs.argmax(axis=1)
    report = skm.classification_report(
        y_test, y_pred, labels=list(range(len(classes))), target_names=classes, output_dict=True, zero_division=0
    )
    cm = skm.confusion_matrix(y_test, y_pred, labels=list(range(len(classes))))

    write_outputs(name, result, summary, len(y_test))
    top = top_confusions(cm, classes)
    write_json(out / "classification_report.json", {"data": meta["data"], "classes": report, "top_confusions": top})
    write_predictions(name, classes, y_test, y_pred)
    label = plots.data_label(meta["data"])
    x_test = load_npy(PREPARED / exp.dataset / "x_test.npy", mmap=True)
    panels = PLOTS / "samples" / f"{name}.png"
    plots.prediction_panels(x_test, y_test, y_pred, classes, f"{name}: test images, true -> predicted{label}", panels)
    return result


def summary_line(name: str, result: dict) -> str:
    """One line for the log: the headline metric, and for segmentation the majority-class baseline."""
    if "test_mean_iou" in result:
        return (
            f"{name}: pixel accuracy {result['test_accuracy']:.4f}, mean IoU {result['test_mean_iou']:.4f}"
            f" (majority-class baseline: {result['baseline_accuracy']:.4f}, {result['baseline_mean_iou']:.4f})"
        )
    return f"{name}: test accuracy {result['test_accuracy']:.4f}, loss {result['test_loss']:.4f}"
