"""Use a trained model on any image files:

    python -m stages.tools.predict <experiment> <image or folder>... [--top-k 3] [--out predictions]

Classification: prints the top-k classes with probabilities per image, and writes
``<out>/predictions.csv`` (file, top-k classes and probabilities, or the error).
Segmentation: writes ``<out>/<image>_mask.png``, the predicted mask as a colour overlay
on the image at its own size (``<image>-2_mask.png``... when two inputs share a name), and
``<out>/predictions.csv`` (file, mask, or the error). Any size and any format OpenCV reads.
Only regular files up to 256 MiB are read (a FIFO, device, broken or looping link is not
opened); every file left out or unreadable gets a one-line error and a CSV row, and the
others still run.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import stat
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from stages.core import cli
from stages.core.errors import DataError, PipelineError
from stages.core.files import atomic_path
from stages.core.paths import MODELS
from stages.inference.model_file import load_model_file

#: Images per ``model.predict`` call (one call per image costs ~0.15 s each on a CPU).
BATCH = 64
#: Segmentation keeps a batch's images at their own size until their overlays are written.
_BATCH_PIXELS = 1 << 26


class OptionError(PipelineError):
    """A command-line option is out of range."""


def _file_limit(max_bytes: int | None) -> int:
    """``max_bytes``, or the image reader's own limit (imported here, not at the top: it loads OpenCV, which
    reads its pixel limit from the environment the command sets first, stages/core/cli.py)."""
    from stages.sources.readers.images import MAX_FILE_BYTES

    return MAX_FILE_BYTES if max_bytes is None else max_bytes


def predict_mask(model, image: np.ndarray) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> class ids (H, W) uint8 at the image's own size."""
    return predict_masks(model, [image])[0]


def predict_masks(model, images: list[np.ndarray]) -> list[np.ndarray]:
    """RGB uint8 images of any sizes -> class ids (H, W) uint8 each, with one ``model.predict`` call."""
    import cv2

    h, w = model.input_shape[1:3]
    small = np.stack([cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA) for img in images])
    probs = model.predict(small.astype(np.float32), batch_size=len(images), verbose=0)
    masks = probs.argmax(axis=-1).astype(np.uint8)
    return [
        cv2.resize(m, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_NEAREST) for m, img in zip(masks, images)
    ]


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    from stages.reporting.plots import color_mask

    return (image * (1 - alpha) + color_mask(mask) * alpha).astype(np.uint8)


_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def check_file(path: Path, max_bytes: int | None = None) -> str | None:
    """Why ``path`` cannot be an image file, or None; only ``os.stat``, nothing is opened."""
    max_bytes = _file_limit(max_bytes)
    try:
        info = os.stat(path)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        return f"broken or looping symbolic link ({reason})" if os.path.islink(path) else f"cannot read ({reason})"
    if stat.S_ISDIR(info.st_mode):
        return "a folder"
    if not stat.S_ISREG(info.st_mode):
        return f"not a regular file ({_KINDS.get(stat.S_IFMT(info.st_mode), 'a special file')})"
    if info.st_size > max_bytes:
        return f"file is {info.st_size} bytes, over the {max_bytes}-byte limit for an image"
    return None


def _walk(folder: Path, max_bytes: int) -> list[tuple[Path, str | None]]:
    """Every entry below ``folder`` (links to folders are reported, not followed), sorted by path."""
    found: list[tuple[Path, str | None]] = []

    def unreadable(exc: OSError) -> None:
        found.append((Path(exc.filename or folder), f"cannot list folder ({exc.strerror or type(exc).__name__})"))

    for top, dirs, names in os.walk(folder, onerror=unreadable):
        for d in [d for d in dirs if os.path.islink(os.path.join(top, d))]:
            dirs.remove(d)
            found.append((Path(top, d), "symbolic link to a folder (not followed)"))
        found += [(Path(top, n), check_file(Path(top, n), max_bytes)) for n in names]
    return sorted(found, key=lambda entry: entry[0])


def image_files(inputs: list[str], max_bytes: int | None = None) -> list[tuple[Path, str | None]]:
    """Each file named or found in a named folder, with why it is left out (None: it is read)."""
    max_bytes = _file_limit(max_bytes)
    entries: list[tuple[Path, str | None]] = []
    for item in map(Path, inputs):
        if os.path.isdir(item):  # os.stat: a FIFO is not opened; an unreadable path is just not a folder
            entries += _walk(item, max_bytes)
        else:
            entries.append((item, check_file(item, max_bytes)))
    return entries


def mask_names(paths: list[Path]) -> list[str]:
    """``<stem>_mask.png`` per path; stems shared by several paths get ``-2``, ``-3``... (in order)."""
    counts = Counter(p.stem.casefold() for p in paths)
    taken = {stem for stem, n in counts.items() if n == 1}
    numbers: Counter[str] = Counter()
    names = []
    for p in paths:
        stem, key = p.stem, p.stem.casefold()
        if counts[key] > 1:
            while True:  # the first keeps its plain name; a generated name never takes another's
                numbers[key] += 1
                stem = p.stem if numbers[key] == 1 else f"{p.stem}-{numbers[key]}"
                if stem.casefold() not in taken:
                    break
            taken.add(stem.casefold())
        names.append(f"{stem}_mask.png")
    return names


def load(experiment: str):
    model_file = MODELS / experiment / "model.keras"
    if not model_file.is_file():
        raise DataError(f"{model_file}: not found; run `dvc repro train@{experiment}` or `dvc pull` first")
    summary_file = MODELS / experiment / "summary.json"
    classes = json.loads(summary_file.read_text()).get("classes") if summary_file.is_file() else None
    return load_model_file(model_file), classes  # pulled from a remote, maybe: checked before Keras reads it


def predict(experiment: str, inputs: list[str], top_k: int = 3, out: Path = Path("predictions")) -> int:
    """Predict every file; return how many failed."""
    check_top_k(top_k, None)
    model, classes = load(experiment)
    return predict_files(model, classes, inputs, top_k=top_k, out=out)


def check_top_k(top_k: int, n_classes: int | None) -> None:
    """OptionError unless 1 <= ``top_k`` <= ``n_classes`` (None: no upper bound known yet)."""
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1 or (n_classes and top_k > n_classes):
        allowed = f"from 1 to {n_classes} (the model's number of classes)" if n_classes else "1 or more"
        raise OptionError(f"--top-k {top_k}: must be {allowed}")


def predict_files(
    model,
    classes: list[str] | None,
    inputs: list[str],
    *,
    top_k: int = 3,
    out: Path = Path("predictions"),
    max_bytes: int | None = None,
    batch: int = BATCH,
) -> int:
    """:func:`predict` with a loaded ``model``: one ``model.predict`` per ``batch`` images; returns
    how many files failed or were left out (each reported on stderr and in the CSV)."""
    segmentation = len(model.output_shape) == 4
    if not segmentation:
        check_top_k(top_k, int(model.output_shape[-1]))
    entries = image_files(inputs, max_bytes)
    blank = 1 if segmentation else 2 * top_k
    rows: list[list[str]] = [[str(p)] + [""] * blank + [f"{p}: {why}" if why else ""] for p, why in entries]
    for row in rows:
        if row[-1]:
            print(f"error: {row[-1]}", file=sys.stderr)
    todo = [i for i, (_, why) in enumerate(entries) if why is None]
    if segmentation:
        names = dict(zip(todo, mask_names([entries[i][0] for i in todo])))
        for chunk in _segmentation_batches(entries, todo, batch, rows):
            _segment(model, [(i, entries[i][0], img) for i, img in chunk], names, out, rows)
        header = ["file", "mask", "error"]
    else:
        for start in range(0, len(todo), batch):
            _classify(model, classes, [(i, entries[i][0]) for i in todo[start : start + batch]], top_k, rows)
        header = ["file"] + [f"{k}{i}" for i in range(1, top_k + 1) for k in ("class", "prob")] + ["error"]
    failed = sum(bool(row[-1]) for row in rows)
    with atomic_path(out / "predictions.csv") as tmp, open(tmp, "w", newline="") as fh:
        csv.writer(fh).writerows([header, *rows])
    print(f"predict: {len(rows) - failed} of {len(rows)} images -> {out / 'predictions.csv'}")
    return failed


def _fail(rows: list[list[str]], i: int, error: str) -> None:
    rows[i][-1] = error
    print(f"error: {error}", file=sys.stderr)


def _classify(model, classes: list[str] | None, chunk: list[tuple[int, Path]], top_k: int, rows: list) -> None:
    """Decode ``chunk`` (index, path) at the model's input size and fill its rows from one prediction."""
    from stages.sources.readers.images import read_image_files

    h, w, channels = model.input_shape[1:4]
    color = "gray" if channels == 1 else "rgb"
    x, ok, skipped = read_image_files([str(p) for _, p in chunk], (h, w), color=color)
    decoded = set(ok)
    for j, (path, reason) in zip([j for j in range(len(chunk)) if j not in decoded], skipped):
        _fail(rows, chunk[j][0], f"{path}: {reason}")
    if not ok:
        return
    probs = model.predict(x.astype(np.float32), batch_size=len(x), verbose=0)
    for j, p in zip(ok, probs):
        i, path = chunk[j]
        best = np.argsort(p)[::-1][:top_k]
        names = [classes[c] if classes and c < len(classes) else str(c) for c in best]
        print(f"{path}: " + ", ".join(f"{n} {p[c]:.3f}" for n, c in zip(names, best)))
        rows[i] = [str(path)] + [v for n, c in zip(names, best) for v in (n, f"{p[c]:.4f}")] + [""]


def _segmentation_batches(
    entries: list[tuple[Path, str | None]], todo: list[int], batch: int, rows: list
) -> Iterator[list[tuple[int, np.ndarray]]]:
    """Decoded (index, RGB image) groups of at most ``batch`` images and about ``_BATCH_PIXELS`` pixels."""
    from stages.sources.readers.images import read_image_files

    chunk: list[tuple[int, np.ndarray]] = []
    pixels = 0
    for i in todo:
        path = entries[i][0]
        x, ok, skipped = read_image_files([str(path)], None, color="rgb", workers=1)
        if not ok:
            _fail(rows, i, f"{path}: {skipped[0][1]}")
            continue
        chunk.append((i, x[0]))
        pixels += x[0].shape[0] * x[0].shape[1]
        if len(chunk) >= batch or pixels >= _BATCH_PIXELS:
            yield chunk
            chunk, pixels = [], 0
    if chunk:
        yield chunk


def _segment(model, chunk: list[tuple[int, Path, np.ndarray]], names: dict[int, str], out: Path, rows: list) -> None:
    import cv2

    for (i, path, rgb), mask in zip(chunk, predict_masks(model, [img for _, _, img in chunk])):
        target = out / names[i]
        with atomic_path(target) as tmp:
            _, png = cv2.imencode(".png", cv2.cvtColor(overlay(rgb, mask), cv2.COLOR_RGB2BGR))
            tmp.write_bytes(png.tobytes())
        print(f"{path}: mask overlay -> {target}")
        rows[i] = [str(path), str(target), ""]


def main(experiment: str, inputs: list[str], top_k: int = 3, out: Path = Path("predictions")) -> None:
    failed = predict(experiment, inputs, top_k, out)
    sys.exit(1 if failed else 0)


def parser() -> argparse.ArgumentParser:
    command = cli.parser(main)
    command.add_argument("experiment", help="a trained experiment of params.yaml (models/<experiment>/)")
    command.add_argument("inputs", nargs="+", help="image files or folders")
    command.add_argument("--top-k", type=int, default=3, metavar="K", help="classes listed per image (default 3)")
    command.add_argument(
        "--out", type=Path, default=Path("predictions"), metavar="DIR", help="output folder (default predictions)"
    )
    return command


if __name__ == "__main__":
    cli.run(main, parser())
