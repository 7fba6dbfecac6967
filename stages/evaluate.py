"""Stage `evaluate@<experiment>`: test-set metrics, per-class report, confusion matrix, figures."""

from __future__ import annotations

import json
import sys

import numpy as np
from sklearn import metrics as skm

from stages import config, plots
from stages.io import load_npy, write_json, write_text
from stages.paths import EXPERIMENT_REPORTS as REPORTS
from stages.paths import MODELS, PREPARED


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


def evaluate(params: config.Params, name: str) -> dict:
    exp = config.experiment(params, name)
    meta = json.loads((PREPARED / exp.dataset / "meta.json").read_text())
    summary = json.loads((MODELS / name / "summary.json").read_text())
    classes, out = meta["classes"], REPORTS / name
    # test-split outputs of the trained model, written by `train` (see the note there)
    probs = load_npy(MODELS / name / "test_probs.npy")
    y_test = load_npy(PREPARED / exp.dataset / "y_test.npy")

    result = classification_metrics(y_test, probs, classes)
    result.update(
        test_seconds=summary["test_seconds"],
        parameters=summary["parameters"],
        epochs_run=summary["epochs_run"],
        train_seconds=summary["train_seconds"],
        test_images=len(y_test),
    )
    y_pred = probs.argmax(axis=1)
    report = skm.classification_report(
        y_test, y_pred, labels=list(range(len(classes))), target_names=classes, output_dict=True, zero_division=0
    )
    cm = skm.confusion_matrix(y_test, y_pred, labels=list(range(len(classes))))
    title = f"{name}: test accuracy {result['test_accuracy']:.3f}{plots.data_label(meta['data'])}"

    write_json(out / "metrics.json", result)
    write_json(out / "classification_report.json", {"data": meta["data"], "classes": report})
    rows = ["actual,predicted"] + [f"{classes[a]},{classes[p]}" for a, p in zip(y_test, y_pred)]
    write_text(out / "predictions.csv", "\n".join(rows) + "\n")
    plots.confusion(cm, classes, title, out / "confusion.png")
    plots.learning_curves(
        out / "train", f"{name}: learning curves{plots.data_label(meta['data'])}", out / "learning_curves.png"
    )
    return result


def main(name: str) -> None:
    params = config.load(check_models=False)
    result = evaluate(params, name)
    print(f"evaluate@{name}: test accuracy {result['test_accuracy']:.4f}, loss {result['test_loss']:.4f}")


if __name__ == "__main__":
    from stages.cli import run

    run(main, sys.argv[1:])
