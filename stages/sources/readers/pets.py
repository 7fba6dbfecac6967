"""Read the Oxford-IIIT Pet layout (``images/`` + ``annotations/trimaps``) into images and masks.

Layout (the official archives, extracted): ``images/<Breed>_<n>.jpg`` (cats capitalised, dogs
lower-case; a few ``.mat`` files and odd-format "jpg"s among them) and ``annotations/`` with
``trimaps/<name>.png`` (values 1 pet, 2 background, 3 border; macOS ``._*.png`` junk beside
them), ``list.txt``, ``trainval.txt`` and ``test.txt`` (lines ``Image CLASS-ID SPECIES BREED-ID``,
``#`` comments). The archive's own trainval/test split is used when its lists are there;
otherwise every image is returned as training data and `prepare` splits it, seeded.

Masks become classes 0 pet, 1 background, 2 border (trimap - 1), resized with nearest-neighbour
only. A trimap with any other value stops the read with a DataError naming the file; an image
without a trimap, or one that does not decode, is skipped with its reason. Grayscale, RGBA and
CMYK images are converted to RGB by the image decoder.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from stages.core.errors import DataError
from stages.sources.readers.images import ImageError, decode_image, read_image_files

CLASSES = ["pet", "background", "border"]
SPECIES = {"dog": ("dog",), "cat": ("cat",), "all": ("cat", "dog"), "both": ("cat", "dog")}


def find_layout(root: Path) -> tuple[Path, Path] | None:
    """(images folder, annotations folder) under ``root``, or None if this is not the layout."""
    for trimaps in sorted(root.rglob("trimaps")):
        if not trimaps.is_dir():
            continue
        annotations = trimaps.parent
        for images in sorted(root.rglob("images")):
            if images.is_dir() and any(images.glob("*.jpg")):
                return images, annotations
    return None


def species_of(name: str) -> str:
    """The dataset's own rule: names that start with a capital are cats, the others dogs."""
    return "cat" if name[:1].isupper() else "dog"


def read_list(path: Path) -> list[str]:
    """Image names from a list file (``Image CLASS-ID SPECIES BREED-ID`` lines, ``#`` comments)."""
    names = []
    for i, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 4 or not all(p.isdigit() for p in parts[1:]):
            raise DataError(f"{path}:{i}: expected 'Image CLASS-ID SPECIES BREED-ID', got {line[:80]!r}")
        names.append(parts[0])
    return names


def read_trimap(path: Path, size: tuple[int, int] | None) -> np.ndarray:
    """One trimap -> uint8 H x W classes 0..2 (nearest-neighbour resize). DataError on other values."""
    try:
        raw = decode_image(path.read_bytes(), None, color="gray", source=str(path))[..., 0]
    except OSError as exc:
        raise ImageError(str(path), f"cannot read trimap ({exc.strerror})") from None
    values = np.unique(raw)
    bad = [int(v) for v in values if v not in (1, 2, 3)]
    if bad:
        raise DataError(f"{path}: trimap has values {bad[:5]} outside {{1, 2, 3}}")
    mask = raw - 1
    if size is not None and mask.shape != tuple(size):
        mask = cv2.resize(mask, (int(size[1]), int(size[0])), interpolation=cv2.INTER_NEAREST)
    return mask


def _read_pairs(
    names: list[str], images: Path, trimaps: Path, size: tuple[int, int], skipped: list[tuple[str, str]], part: str
) -> tuple[np.ndarray, np.ndarray]:
    have = []
    for name in names:
        img, tri = images / f"{name}.jpg", trimaps / f"{name}.png"
        if not img.is_file():
            skipped.append((str(img), "listed, but the image file is missing"))
        elif not tri.is_file():
            skipped.append((str(img), f"no trimap ({tri.name} missing)"))
        else:
            have.append(name)
    x, ok, bad = read_image_files(
        [images / f"{n}.jpg" for n in have], size, color="rgb", progress=f"decode pets {part}"
    )
    skipped.extend(bad)
    kept = [have[i] for i in ok]
    with ThreadPoolExecutor(max(1, min(8, os.cpu_count() or 1))) as pool:
        masks = list(pool.map(lambda n: read_trimap(trimaps / f"{n}.png", size), kept))
    y = np.stack(masks) if masks else np.empty((0, *size), np.uint8)
    return x, y


def read_pets(
    root: Path, size: tuple[int, int] | None = None, species: str = "dog"
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, list[tuple[str, str]]]:
    """Images (N, H, W, 3) uint8 and masks (N, H, W) uint8 0..2 of the chosen species.

    Returns ``x_train, y_train, x_test, y_test, skipped``; the test arrays are None when the
    archive has no trainval/test lists.
    """
    size = tuple(size or (96, 96))
    if species not in SPECIES:
        raise DataError(f"species must be one of {sorted(SPECIES)}, not {species!r}")
    keep = SPECIES[species]
    found = find_layout(root)
    if found is None:
        raise DataError(f"{root}: no Oxford-IIIT Pet layout (images/*.jpg + annotations/trimaps/)")
    images, annotations = found
    trimaps = annotations / "trimaps"
    on_disk = sorted(p.stem for p in images.glob("*.jpg") if not p.name.startswith("."))
    skipped: list[tuple[str, str]] = []
    lists = {part: annotations / f"{part}.txt" for part in ("trainval", "test")}
    if all(f.is_file() for f in lists.values()):
        parts = {part: [n for n in read_list(f) if species_of(n) in keep] for part, f in lists.items()}
        listed = set(parts["trainval"]) | set(parts["test"])
        skipped += [
            (str(images / f"{n}.jpg"), "in neither trainval.txt nor test.txt")
            for n in on_disk
            if species_of(n) in keep and n not in listed
        ]
        x_train, y_train = _read_pairs(parts["trainval"], images, trimaps, size, skipped, "trainval")
        x_test, y_test = _read_pairs(parts["test"], images, trimaps, size, skipped, "test")
        return x_train, y_train, x_test, y_test, skipped
    x, y = _read_pairs([n for n in on_disk if species_of(n) in keep], images, trimaps, size, skipped, "images")
    return x, y, None, None, skipped
