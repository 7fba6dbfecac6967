"""Stage `prepare@<dataset>`: extracted source -> a few uint8 .npy files + meta.json.

Applies the dataset's settings from params.yaml: class subset or mapping,
grayscale, resize, and seeded stratified validation/test splits. Normalisation is
not done here: it lives inside each model, which takes raw 0..255 pixels.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from stages.core import cli, config
from stages.core.errors import ConfigError, DataError
from stages.core.files import atomic_path, save_npy, write_json
from stages.core.paths import EXTRACTED, PREPARED, RAW
from stages.sources.formats import RawData, decoded, read_raw

#: Skipped files that meta.json names; beyond them, only their count (``skipped_total``). Real data
#: skips a few dozen at most (the pets archive's unlisted images, Thumbs.db files); a copy whose lists
#: name thousands of absent images would otherwise write every name (1.27 GB for a 200 MB list).
MAX_SKIPPED_LISTED = 100


def select_classes(raw: RawData, keep: list[int] | None, mapping: dict[int, int] | None, where: str) -> RawData:
    """Keep ``keep`` (renumbered 0..k-1 in that order) or apply ``mapping`` source->target."""
    if keep is None and mapping is None:
        return raw
    if keep is not None and mapping is not None:
        raise ConfigError(f"{where}: set either classes or class_map, not both")
    if keep is not None:
        mapping = {src: dst for dst, src in enumerate(keep)}
        names = [raw.classes[c] for c in keep]
    else:
        targets = sorted(set(mapping.values()))
        if targets != list(range(len(targets))):
            raise ConfigError(f"{where}.class_map: targets must be 0..k-1, got {targets}")
        names = ["+".join(raw.classes[s] for s, d in sorted(mapping.items()) if d == t) for t in targets]
    bad = [c for c in mapping if not 0 <= c < len(raw.classes)]
    if bad:
        raise ConfigError(f"{where}: source has {len(raw.classes)} classes, no class {bad[0]}")
    lut = np.full(len(raw.classes), -1, np.int64)
    for src, dst in mapping.items():
        lut[src] = dst

    def pick(x: np.ndarray | None, y: np.ndarray | None) -> tuple[np.ndarray | None, np.ndarray | None]:
        if x is None:
            return None, None
        new = lut[y]
        return x[new >= 0], new[new >= 0]

    x_train, y_train = pick(raw.x_train, raw.y_train)
    x_test, y_test = pick(raw.x_test, raw.y_test)
    return RawData(x_train, y_train, x_test, y_test, names, raw.skipped)


def to_color(x: np.ndarray, color: str) -> np.ndarray:
    """(N, H, W, C) uint8 -> the dataset's channel count, with OpenCV's luminance weights."""
    import cv2  # here, not at the top: OpenCV reads its pixel limit when it loads (stages/core/cli.py)

    n, h, w, c = x.shape
    if color == "gray" and c == 3:
        return cv2.cvtColor(x.reshape(n * h, w, 3), cv2.COLOR_RGB2GRAY).reshape(n, h, w, 1)
    if color == "rgb" and c == 1:
        return np.repeat(x, 3, axis=-1)
    return x


def resize(x: np.ndarray, size: list[int] | None) -> np.ndarray:
    if size is None or tuple(x.shape[1:3]) == tuple(size):
        return x
    import cv2

    h, w = size
    out = np.stack([cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA) for img in x])
    return out.reshape(len(x), h, w, -1)


def split(x: np.ndarray, y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, ...]:
    """Seeded split, stratified by class when every class has at least two examples. Both parts come in
    seeded random order, a fraction of 0 included: training reads the first images for what adapts to the
    data (standardisation, a whitening stem) and ``max_train_examples`` keeps the first N, so an archive's
    class-sorted order must not survive."""
    if fraction == 0:
        order = np.random.default_rng(seed).permutation(len(x))
        return x[order], x[:0], y[order], y[:0]
    counts = np.bincount(y.reshape(len(y), -1)[:, 0]) if y.ndim == 1 else None
    stratify = y if counts is not None and counts[counts > 0].min() >= 2 else None
    return train_test_split(x, y, test_size=fraction, random_state=seed, stratify=stratify)


def _split_or_refuse(x: np.ndarray, y: np.ndarray, fraction: float, seed: int, setting: str) -> tuple[np.ndarray, ...]:
    """:func:`split`, with a DataError naming ``setting`` when too few images are left to split."""
    try:
        return split(x, y, fraction, seed)
    except ValueError as exc:  # scikit-learn's: an empty side, or fewer images than classes
        raise DataError(f"{setting}: cannot split {fraction:.3g} of {len(x)} image(s) off ({exc})") from None


def _refuse_empty(
    arrays: dict[str, tuple[np.ndarray, np.ndarray]], val_fraction: float, where: str, raw: RawData
) -> None:
    """A split left without images is an error, never a success (training would fail later, or score
    nothing); the validation split may be empty only when ``val_fraction`` is 0."""
    for part, (x, _) in arrays.items():
        if len(x) == 0 and not (part == "val" and val_fraction == 0):
            first = f"; first: {raw.skipped[0][0]}: {raw.skipped[0][1]}" if raw.skipped else ""
            raise DataError(f"{where}: no {part} images left ({len(raw.skipped)} file(s) skipped{first})")


def load_source(params: config.Params, name: str) -> RawData:
    """The dataset's source as arrays: its .pth file, else its extracted folder read in the source's format,
    encoded images decoded at the dataset's image_size (RGB; colour and any other resizing: :func:`prepare`)."""
    ds = params.datasets[name]
    if ds.pth:
        from stages.sources.readers.pth import load_pth

        d = load_pth(Path(ds.pth).expanduser())
        names = d.get("classes") or ds.options.get("class_names")  # the file's own names, else params'
        if not names:
            names = [str(c) for c in range(int(d["y_train"].max()) + 1)]
        return RawData(d["x_train"], d["y_train"], d["x_test"], d["y_test"], names)
    fmt = params.sources[ds.source].layout(params.profile)
    raw = read_raw(EXTRACTED / ds.source, fmt, ds.options, f"params.yaml: sources.{ds.source}.format")
    return decoded(raw, tuple(ds.image_size) if ds.image_size else None)


def prepare(params: config.Params, name: str) -> dict:
    ds, where = params.datasets[name], f"params.yaml: datasets.{name}"
    source = load_source(params, name)
    provenance = {} if ds.pth else _provenance(RAW / ds.source / "provenance.json")
    named_by_params = list(source.classes) == [str(n) for n in ds.options.get("class_names", [])]
    if named_by_params and provenance.get("official") is False and params.profile != "embedded":
        print(
            f"{where}.options.class_names: names from params.yaml, but data/raw/{ds.source} is not the official "
            "release: check they are what your labels mean"
        )
    raw = select_classes(source, ds.classes, ds.class_map, where)
    if len(raw.x_train) == 0:
        raise DataError(f"{where}: no training images left after class selection")
    x_train, y_train = raw.x_train, raw.y_train
    x_test, y_test = raw.x_test, raw.y_test
    if x_test is None:
        if ds.test_fraction == 0:
            raise ConfigError(f"{where}.test_fraction: source {ds.source} has no test set, set a fraction > 0")
        split_test = _split_or_refuse(x_train, y_train, ds.test_fraction, params.seed, f"{where}.test_fraction")
        x_train, x_test, y_train, y_test = split_test
    limit = params.active.max_trainval_examples
    if limit and len(x_train) > limit:
        fraction, setting = 1 - limit / len(x_train), f"params.yaml: profiles.{params.profile}.max_trainval_examples"
        x_train, _, y_train, _ = _split_or_refuse(x_train, y_train, fraction, params.seed, setting)
    split_val = _split_or_refuse(x_train, y_train, ds.val_fraction, params.seed, f"{where}.val_fraction")
    x_train, x_val, y_train, y_val = split_val
    arrays = {"train": (x_train, y_train), "val": (x_val, y_val), "test": (x_test, y_test)}
    _refuse_empty(arrays, ds.val_fraction, where, raw)
    if ds.task == "classification":
        arrays = {k: (resize(to_color(x, ds.color), ds.image_size), y) for k, (x, y) in arrays.items()}
    meta = {
        "dataset": name,
        "task": ds.task,
        "classes": list(raw.classes),
        "image_shape": list(arrays["train"][0].shape[1:]),
        "counts": {k: len(x) for k, (x, _) in arrays.items()},
        "data": f"course .pth file {ds.pth}" if ds.pth else provenance.get("origin", "unknown"),
        "skipped": [{"file": f, "reason": r} for f, r in raw.skipped[:MAX_SKIPPED_LISTED]],
    }
    if len(raw.skipped) > MAX_SKIPPED_LISTED:  # only then: meta.json of data that skips fewer stays as it was
        meta["skipped_total"] = len(raw.skipped)
    with atomic_path(PREPARED / name, is_dir=True) as tmp:
        for part, (x, y) in arrays.items():
            save_npy(tmp / f"x_{part}.npy", np.ascontiguousarray(x, dtype=np.uint8))
            save_npy(
                tmp / f"y_{part}.npy",
                np.ascontiguousarray(y, dtype=np.uint8 if ds.task == "segmentation" else np.int64),
            )
        write_json(tmp / "meta.json", meta)
    return meta


def _provenance(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def main(name: str) -> None:
    params = config.load()
    config.lookup(params.datasets, name, "dataset")
    meta = prepare(params, name)
    shape, skipped = meta["image_shape"], meta.get("skipped_total", len(meta["skipped"]))
    print(f"prepare@{name}: {meta['counts']} images of shape {shape}, {skipped} skipped ({meta['data']})")
    for s in meta["skipped"][:20]:
        print(f"  skipped {s['file']}: {s['reason']}")


def parser() -> argparse.ArgumentParser:
    command = cli.parser(main)
    command.add_argument("name", help="a dataset of params.yaml (datasets.<name>)")
    return command


if __name__ == "__main__":
    cli.run(main, parser())
