"""Use a trained model on any image files:

    python -m stages.predict <experiment> <image or folder>... [--top-k 3] [--out predictions]

Classification: prints the top-k classes with probabilities per image, and writes
``<out>/predictions.csv`` (file, top-k classes and probabilities, or the error).
Segmentation: writes ``<out>/<image>_mask.png``, the predicted mask as a colour overlay
on the image at its own size. Any size and any format OpenCV reads; an unreadable file
gets a one-line error and the others still run.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import cv2
import numpy as np

from stages.errors import DataError, PipelineError
from stages.io import atomic_path
from stages.paths import MODELS
from stages.readers.images import decode_image


def predict_mask(model, image: np.ndarray) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> class ids (H, W) uint8 at the image's own size."""
    h, w = model.input_shape[1:3]
    small = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    probs = model.predict(small[None].astype(np.float32), verbose=0)[0]
    mask = probs.argmax(axis=-1).astype(np.uint8)
    return cv2.resize(mask, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST)


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    from stages.plots import color_mask

    return (image * (1 - alpha) + color_mask(mask) * alpha).astype(np.uint8)


def image_files(inputs: list[str]) -> list[Path]:
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files += sorted(p for p in item.rglob("*") if p.is_file())
        else:
            files.append(item)  # a missing file is reported per file, like an unreadable one
    return files


def load(experiment: str):
    import keras

    from stages import train  # noqa: F401  (registers the project's custom losses for loading)

    model_file = MODELS / experiment / "model.keras"
    if not model_file.is_file():
        raise DataError(f"{model_file}: not found; run `dvc repro train@{experiment}` or `dvc pull` first")
    summary_file = MODELS / experiment / "summary.json"
    classes = json.loads(summary_file.read_text()).get("classes") if summary_file.is_file() else None
    return keras.models.load_model(model_file, compile=False), classes


def predict(experiment: str, inputs: list[str], top_k: int = 3, out: Path = Path("predictions")) -> int:
    """Predict every file; return how many failed."""
    model, classes = load(experiment)
    segmentation = len(model.output_shape) == 4
    h, w, channels = model.input_shape[1:4]
    rows, failed = [], 0
    for path in image_files(inputs):
        try:
            data = path.read_bytes()
        except OSError as exc:
            data, error = None, f"{path}: cannot read ({exc.strerror})"
        try:
            if data is None:
                raise DataError(error)
            if segmentation:
                rgb = decode_image(data, None, color="rgb", source=str(path))
                target = out / f"{path.stem}_mask.png"
                with atomic_path(target) as tmp:
                    tmp.write_bytes(
                        cv2.imencode(".png", cv2.cvtColor(overlay(rgb, predict_mask(model, rgb)), cv2.COLOR_RGB2BGR))[
                            1
                        ].tobytes()
                    )
                print(f"{path}: mask overlay -> {target}")
                continue
            img = decode_image(data, (h, w), color="gray" if channels == 1 else "rgb", source=str(path))
            probs = model.predict(img[None].astype(np.float32), verbose=0)[0]
            best = np.argsort(probs)[::-1][:top_k]
            names = [classes[i] if classes else str(i) for i in best]
            print(f"{path}: " + ", ".join(f"{n} {probs[i]:.3f}" for n, i in zip(names, best)))
            rows.append([str(path)] + [v for n, i in zip(names, best) for v in (n, f"{probs[i]:.4f}")] + [""])
        except PipelineError as exc:
            failed += 1
            print(f"error: {exc}", file=sys.stderr)
            rows.append([str(path)] + [""] * (2 * top_k) + [str(exc)])
    if not segmentation:
        header = ["file"] + [f"{k}{i}" for i in range(1, top_k + 1) for k in ("class", "prob")] + ["error"]
        with atomic_path(out / "predictions.csv") as tmp, open(tmp, "w", newline="") as fh:
            csv.writer(fh).writerows([header, *rows])
        print(f"predict: {len(rows) - failed} of {len(rows)} images -> {out / 'predictions.csv'}")
    return failed


def main(experiment: str, *options: str) -> None:
    """``python -m stages.predict <experiment> <image or folder>... [--top-k K] [--out DIR]``: the top K
    classes (default 3) per image into DIR/predictions.csv, or a mask overlay per image into DIR (default
    predictions/)."""
    paragraphs = (__doc__ or "").split("\n\n")  # description, usage example, details
    parser = argparse.ArgumentParser(
        prog=f"python -m stages.predict {experiment}",
        description=paragraphs[0].rstrip(":") + ".",
        epilog="\n\n".join(paragraphs[2:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", help="image files or folders")
    parser.add_argument("--top-k", type=int, default=3, help="classes listed per image (default 3)")
    parser.add_argument("--out", type=Path, default=Path("predictions"), help="output folder (default predictions)")
    args = parser.parse_args(options)
    failed = predict(experiment, args.inputs, args.top_k, args.out)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    from stages.cli import run

    run(main, sys.argv[1:])
