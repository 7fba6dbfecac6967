"""Read the Oxford-IIIT Pet layout (``images/`` + ``annotations/trimaps``) into images and masks.

Layout (the official archives, extracted): ``images/<Breed>_<n>.jpg`` (cats capitalised, dogs
lower-case; a few ``.mat`` files and odd-format "jpg"s among them) and ``annotations/`` with
``trimaps/<name>.png`` (values 1 pet, 2 background, 3 border; macOS ``._*.png`` junk beside
them), ``list.txt``, ``trainval.txt`` and ``test.txt`` (lines ``Image CLASS-ID SPECIES BREED-ID``,
``#`` comments). The archive's own trainval/test split is used when its lists are there;
otherwise every image is returned as training data and `prepare` splits it, seeded.

Masks become classes 0 pet, 1 background, 2 border (trimap - 1), resized with nearest-neighbour
only. A trimap with any other value stops the read with a DataError naming the file; an image
without a trimap, whose trimap's size is not its own (never stretched to fit), or that does not
decode, is skipped with its reason. Grayscale, RGBA and CMYK images are converted to RGB by the
image decoder.

The lists are bounded: at most :data:`MAX_LIST_BYTES` each, a name listed twice is read once, a
name in both lists stops the read (a test image must not be trained on), and the read stops once
more than :data:`MAX_MISSING` listed images are missing. A list whose images all fail leaves no
split empty: it stops the read naming the list.
"""

from __future__ import annotations

import os
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from stages.core.errors import DataError
from stages.sources.readers.images import decode_image, image_file_dims, open_image, read_image_files

CLASSES = ["pet", "background", "border"]
SPECIES = {"dog": ("dog",), "cat": ("cat",), "all": ("cat", "dog"), "both": ("cat", "dog")}
#: Largest list file read (trainval.txt, test.txt). The official lists are a few hundred KB at most
#: (list.txt, the longest, ~200 KB for 7,349 names); 4 MiB holds 20 times that, and it keeps a
#: hostile list (200 MB of names) from costing gigabytes before anything is checked.
MAX_LIST_BYTES = 4 * 2**20
#: Listed images that may be missing (no image file, or no trimap) before the read stops. It is
#: over the 7,349 names of the official lists, so a subset of the images with the official lists
#: still reads (the names it lacks skipped, counted and sampled in meta.json); a list naming more
#: missing images than the dataset holds is not a list of these images.
MAX_MISSING = 10_000


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


def _read_text(path: Path, limit: int) -> str:
    """The UTF-8 text of a regular file of at most ``limit`` bytes; DataError naming it otherwise."""
    too_big = f"over the {limit:,}-byte limit for an image list"
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise DataError(f"{path}: not a regular file")
        if info.st_size > limit:
            raise DataError(f"{path}: {info.st_size:,} bytes, {too_big}")
        with path.open("rb") as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror or type(exc).__name__})") from None
    if len(data) > limit:  # it grew since the stat
        raise DataError(f"{path}: over {limit:,} bytes, {too_big}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start})") from None


def read_list(path: Path) -> tuple[list[str], list[str]]:
    """Image names from a list file (``Image CLASS-ID SPECIES BREED-ID`` lines, ``#`` comments), each
    once in the order of its first line, and the names listed more than once.

    A repeat is read once, not refused: a list names a set of images, and a repeated line would
    only weigh an image twice in training or scoring; the caller notes the repeats as skipped.
    """
    names: dict[str, None] = {}
    repeated: dict[str, None] = {}
    for i, line in enumerate(_read_text(path, MAX_LIST_BYTES).splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 4 or not all(p.isascii() and p.isdigit() for p in parts[1:]):
            raise DataError(f"{path}:{i}: expected 'Image CLASS-ID SPECIES BREED-ID', got {line[:80]!r}")
        (repeated if parts[0] in names else names)[parts[0]] = None
    return list(names), list(repeated)


def _trimap_classes(raw: np.ndarray, path: Path) -> np.ndarray:
    """Trimap values 1, 2, 3 -> classes 0, 1, 2; DataError naming ``path`` for any other value."""
    bad = [int(v) for v in np.unique(raw) if v not in (1, 2, 3)]
    if bad:
        raise DataError(f"{path}: trimap has values {bad[:5]} outside {{1, 2, 3}}")
    return raw - 1


def read_mask(image: Path, trimap: Path, size: tuple[int, int] | None) -> tuple[np.ndarray | None, str | None]:
    """``(mask, None)``: ``trimap`` as uint8 H x W classes 0..2 (nearest-neighbour resize to ``size``);
    ``(None, reason)`` when its size is not that of ``image``, whose header gives it.

    The trimap is read, decoded, checked and resized inside the process's decode budget.
    """
    dims = image_file_dims(image)
    with open_image(trimap) as data:
        raw = decode_image(data, None, color="gray", source=str(trimap))[..., 0]
        mask = _trimap_classes(raw, trimap)
        height, width = mask.shape
        if dims is None:  # the image decoded, yet its header is unknown here: no way to check the fit
            return None, "no size in its header to check its trimap against"
        if (width, height) != tuple(dims):
            reason = f"trimap {trimap.name} is {width}x{height}, the image {dims[0]}x{dims[1]} (never stretched to fit)"
            return None, reason
        if size is not None and mask.shape != tuple(size):
            mask = cv2.resize(mask, (int(size[1]), int(size[0])), interpolation=cv2.INTER_NEAREST)
    return mask, None


def _present(
    names: list[str], on_disk: set[str], images: Path, trimaps: Path, missing: list[tuple[str, str]], allowed: int
) -> list[str]:
    """The ``names`` whose image and trimap are both there; the others go to ``missing``, and once it
    holds more than ``allowed`` the read stops. Names are looked up among the files of ``images``,
    never joined into a path first: a listed ``../x`` is missing, not read from elsewhere."""
    have = []
    for name in names:
        img = images / f"{name}.jpg" if name in on_disk else None
        if img is None or not img.is_file():
            missing.append((str(images / f"{name}.jpg"), "listed, but the image file is missing"))
        elif not (trimaps / f"{name}.png").is_file():
            missing.append((str(img), f"no trimap ({name}.png missing)"))
        else:
            have.append(name)
        if len(missing) > allowed:
            return have
    return have


@dataclass
class _Layout:
    images: Path
    trimaps: Path
    species: str

    def image(self, name: str) -> Path:
        return self.images / f"{name}.jpg"

    def trimap(self, name: str) -> Path:
        return self.trimaps / f"{name}.png"


def _read_pairs(
    layout: _Layout, names: list[str], size: tuple[int, int], skipped: list[tuple[str, str]], part: str
) -> tuple[np.ndarray, ...]:
    """Images and masks of ``names`` (all present) at ``size``; those that do not decode or whose trimap
    does not fit them go to ``skipped``."""
    x, ok, bad = read_image_files([layout.image(n) for n in names], size, color="rgb", progress=f"decode pets {part}")
    skipped.extend(bad)
    kept = [names[i] for i in ok]
    with ThreadPoolExecutor(max(1, min(8, os.cpu_count() or 1))) as pool:
        masks = list(pool.map(lambda n: read_mask(layout.image(n), layout.trimap(n), size), kept))
    fits = np.array([mask is not None for mask, _ in masks], dtype=bool)
    skipped.extend((str(layout.image(n)), reason) for n, (mask, reason) in zip(kept, masks) if mask is None)
    if not fits.all():
        x = x[fits]
    y = np.stack([m for m, _ in masks if m is not None]) if fits.any() else np.empty((0, *size), np.uint8)
    return x, y


@dataclass
class _Part:
    """One split's images: the ``names`` present, the ``missing`` ones, and the list (or folder) naming them."""

    names: list[str]
    missing: list[tuple[str, str]]
    source: Path


def _read_part(
    layout: _Layout, part: _Part, size: tuple[int, int], skipped: list[tuple[str, str]]
) -> tuple[np.ndarray, ...]:
    """One split at ``size``, after noting its missing images. A split left empty stops the read, naming
    its source (its list, or the images folder) and the first reason."""
    start, source = len(skipped), part.source
    skipped.extend(part.missing)
    x, y = _read_pairs(layout, part.names, size, skipped, source.stem)
    if len(x) == 0:
        what = {"dog": "dog", "cat": "cat"}.get(layout.species, "dog or cat")
        if len(skipped) == start:
            raise DataError(f"{source}: no {what} images in it")
        file, reason = skipped[start]
        raise DataError(
            f"{source}: none of its {len(skipped) - start} {what} images could be read "
            f"(first: {Path(file).name}: {reason})"
        )
    return x, y


def _find_listed(
    layout: _Layout, parts: dict[str, list[str]], on_disk: set[str], lists: dict[str, Path]
) -> tuple[dict[str, list[str]], dict[str, list[tuple[str, str]]]]:
    """The present names of each list, and its missing ones; more than MAX_MISSING missing in all
    stops the read before any image is decoded."""
    have, missing, allowed = {}, {}, MAX_MISSING
    for part, names in parts.items():
        missing[part] = []
        have[part] = _present(names, on_disk, layout.images, layout.trimaps, missing[part], allowed)
        allowed -= len(missing[part])
        if allowed < 0:
            first = Path(next(m for found in missing.values() for m in found)[0]).name
            raise DataError(
                f"{lists[part]}: more than {MAX_MISSING:,} listed images are missing from {layout.images} "
                f"or have no trimap (first: {first}); is it the list of these images?"
            )
    return have, missing


def _listed_parts(
    lists: dict[str, Path], keep: tuple[str, ...], skipped: list[tuple[str, str]]
) -> dict[str, list[str]]:
    """Each list's names of the ``keep`` species; repeats noted in ``skipped``; names in both refused."""
    parts = {}
    for part, path in lists.items():
        names, repeated = read_list(path)
        if repeated:
            skipped.append(
                (str(path), f"{len(repeated)} name(s) listed more than once, read once (first: {repeated[0]})")
            )
        parts[part] = [n for n in names if species_of(n) in keep]
    both = set(parts["trainval"]).intersection(parts["test"])
    if both:
        first = next(n for n in parts["test"] if n in both)
        raise DataError(
            f"{lists['test']}: {len(both)} image(s) also in {lists['trainval'].name} (first: {first}); "
            "a test image must not be trained on"
        )
    return parts


@dataclass
class PetsFiles:
    """The pets' image and trimap files of each split, listed; :meth:`decode` reads them."""

    layout: _Layout
    train: _Part
    test: _Part | None  # None: the archive has no trainval/test lists
    skipped: list[tuple[str, str]]  # found while listing: unlisted images, repeated names

    def decode(
        self, size: tuple[int, int] | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, list[tuple[str, str]]]:
        """Images (N, H, W, 3) uint8 and masks (N, H, W) uint8 0..2 at ``size`` (height, width), as
        :func:`read_pets` returns them. Images are decoded straight to the size; masks resized nearest."""
        if size is None:
            raise DataError(f"{self.layout.images}: pet photos differ in size: give the dataset an image_size")
        size, skipped = (int(size[0]), int(size[1])), list(self.skipped)
        x_train, y_train = _read_part(self.layout, self.train, size, skipped)
        if self.test is None:
            return x_train, y_train, None, None, skipped
        x_test, y_test = _read_part(self.layout, self.test, size, skipped)
        return x_train, y_train, x_test, y_test, skipped


def list_pets(root: Path, species: str = "dog") -> PetsFiles:
    """The Oxford-IIIT Pet files of ``species`` under ``root``, checked against the lists, none decoded."""
    if species not in SPECIES:
        raise DataError(f"species must be one of {sorted(SPECIES)}, not {species!r}")
    keep = SPECIES[species]
    found = find_layout(root)
    if found is None:
        raise DataError(f"{root}: no Oxford-IIIT Pet layout (images/*.jpg + annotations/trimaps/)")
    images, annotations = found
    layout = _Layout(images, annotations / "trimaps", species)
    on_disk = sorted(p.stem for p in images.glob("*.jpg") if not p.name.startswith("."))
    skipped: list[tuple[str, str]] = []
    lists = {part: annotations / f"{part}.txt" for part in ("trainval", "test")}
    if not all(f.is_file() for f in lists.values()):
        names, missing = [n for n in on_disk if species_of(n) in keep], []
        have = _present(names, set(on_disk), images, layout.trimaps, missing, allowed=len(names))
        return PetsFiles(layout, _Part(have, missing, images), None, skipped)
    parts = _listed_parts(lists, keep, skipped)
    listed = set(parts["trainval"]) | set(parts["test"])
    skipped += [
        (str(layout.image(n)), "in neither trainval.txt nor test.txt")
        for n in on_disk
        if species_of(n) in keep and n not in listed
    ]
    have, missing = _find_listed(layout, parts, set(on_disk), lists)
    train = _Part(have["trainval"], missing["trainval"], lists["trainval"])
    return PetsFiles(layout, train, _Part(have["test"], missing["test"], lists["test"]), skipped)


def read_pets(
    root: Path, size: tuple[int, int] | None, species: str = "dog"
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, list[tuple[str, str]]]:
    """Images (N, H, W, 3) uint8 and masks (N, H, W) uint8 0..2 of the chosen species, at ``size``.

    Returns ``x_train, y_train, x_test, y_test, skipped``; the test arrays are None when the
    archive has no trainval/test lists.
    """
    return list_pets(root, species).decode(size)
