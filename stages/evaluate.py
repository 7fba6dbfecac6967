"""Stage `evaluate@<experiment>`: test-set metrics, per-class report, confusion matrix, figures."""

from __future__ import annotations

import json
import sys

import numpy as np
from sklearn import metrics as skm

from stages import config, plots
from stages.io import load_npy, write_json, write_text
from stages.paths import EXPERIMENT_REPORTS as REPORTS
from stages.paths import MODELS, PLOTS, PREPARED


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
    masks = load_npy(MODELS / name / "test_masks.npy")
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
    title = f"{name}: pixel accuracy {result['test_accuracy']:.3f}, mean IoU {result['test_mean_iou']:.3f}{label}"
    plots.confusion(cm, classes, title, out / "confusion.png")
    plots.learning_curves(out / "train", f"{name}: learning curves{label}", out / "learning_curves.png")
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
    if "flops" in summary:  # one image's forward pass (stages.flops)
        result["flops"] = summary["flops"]
    timings = {k: summary[k] for k in ("train_seconds", "test_seconds")}
    write_json(REPORTS / name / "metrics.json", {k: result[k] for k in HEADLINE if k in result})
    details = {k: v for k, v in result.items() if k not in HEADLINE}
    write_json(REPORTS / name / "details.json", {**details, **timings, "test_images": test_images})


def write_predictions(name: str, classes: list[str], actual: np.ndarray, predicted: np.ndarray) -> None:
    """actual,predicted class names per test image (or sampled pixel), for DVC's confusion plot."""
    rows = ["actual,predicted"] + [f"{classes[a]},{classes[p]}" for a, p in zip(actual, predicted)]
    write_text(PLOTS / "confusion" / f"{name}.csv", "\n".join(rows) + "\n")


def evaluate(params: config.Params, name: str) -> dict:
    exp = config.experiment(params, name)
    meta = json.loads((PREPARED / exp.dataset / "meta.json").read_text())
    summary = json.loads((MODELS / name / "summary.json").read_text())
    if meta.get("task") == "segmentation":
        return evaluate_segmentation(name, meta, summary, load_npy(PREPARED / exp.dataset / "y_test.npy"))
    classes, out = meta["classes"], REPORTS / name
    # test-split outputs of the trained model, written by `train` (see the note there)
    probs = load_npy(MODELS / name / "test_probs.npy")
    y_test = load_npy(PREPARED / exp.dataset / "y_test.npy")

    result = classification_metrics(y_test, probs, classes)
    y_pred = probs.argmax(axis=1)
    report = skm.classification_report(
        y_test, y_pred, labels=list(range(len(classes))), target_names=classes, output_dict=True, zero_division=0
    )
    cm = skm.confusion_matrix(y_test, y_pred, labels=list(range(len(classes))))
    title = f"{name}: test accuracy {result['test_accuracy']:.3f}{plots.data_label(meta['data'])}"

    write_outputs(name, result, summary, len(y_test))
    top = plots.top_confusions(cm, classes)
    write_json(out / "classification_report.json", {"data": meta["data"], "classes": report, "top_confusions": top})
    write_predictions(name, classes, y_test, y_pred)
    plots.confusion(cm, classes, title, out / "confusion.png")
    label = plots.data_label(meta["data"])
    plots.learning_curves(out / "train", f"{name}: learning curves{label}", out / "learning_curves.png")
    x_test = load_npy(PREPARED / exp.dataset / "x_test.npy", mmap=True)
    panels = PLOTS / "samples" / f"{name}.png"
    plots.prediction_panels(x_test, y_test, y_pred, classes, f"{name}: test images, true -> predicted{label}", panels)
    return result


def main(name: str) -> None:
    params = config.load()
    result = evaluate(params, name)
    if "test_mean_iou" in result:
        print(
            f"evaluate@{name}: pixel accuracy {result['test_accuracy']:.4f}, mean IoU {result['test_mean_iou']:.4f}"
            f" (majority-class baseline: {result['baseline_accuracy']:.4f}, {result['baseline_mean_iou']:.4f})"
        )
        return
    print(f"evaluate@{name}: test accuracy {result['test_accuracy']:.4f}, loss {result['test_loss']:.4f}")


if __name__ == "__main__":
    from stages.cli import run

    run(main, sys.argv[1:])
