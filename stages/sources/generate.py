"""Embedded sample data: raw files in each source's *official* format, made locally.

The embedded profile's `download` stage calls these instead of fetching, so the
same extract/prepare/train code runs on them as on the real datasets.
Each generator writes into ``dest`` the files the real source would provide, with the
writers of those formats kept here (the tests use them too; the readers only read):
CIFAR-10 python batches (Python 2 pickles, :class:`CompatPickler`), IDX and Kaggle CSV.
"""

from __future__ import annotations

import contextlib
import gzip as gzip_module
import io
import os
import pickle
import struct
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

from stages.core.files import atomic_path
from stages.sources.readers.cifar import BATCHES_DIR
from stages.sources.readers.cifar import CLASSES as CIFAR10_CLASSES
from stages.sources.synthetic import shape_dataset

GENERATORS: dict[str, Callable[..., None]] = {}


def generator(fn: Callable[..., None]) -> Callable[..., None]:
    GENERATORS[fn.__name__] = fn
    return fn


def deterministic_tar_gz(path: Path, members: dict[str, bytes], *, compress: bool = True) -> None:
    """A .tar.gz whose bytes depend only on its content (fixed mtimes, no gzip timestamp).

    ``compress=False`` writes a plain tar under the same name (as the Oxford-IIIT Pet archives are).
    """
    with (
        open(path, "wb") as raw,
        gzip_module.GzipFile(fileobj=raw, mode="wb", mtime=0) if compress else contextlib.nullcontext(raw) as gz,
    ):
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            dirs = sorted({str(Path(n).parent) for n in members} - {"."})
            for d in dirs:
                info = tarfile.TarInfo(d)
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            for name in sorted(members):
                info = tarfile.TarInfo(name)
                info.size, info.mode = len(members[name]), 0o644
                tar.addfile(info, io.BytesIO(members[name]))


# --- pickles as Python 2, NumPy and torch write them, without torch (CIFAR batches; .pth in the tests) --


class GlobalRef:
    """A ``module.name`` global to be written as-is by :class:`CompatPickler`.

    Lets the project's writers reference ``torch._utils._rebuild_tensor_v2`` or
    ``numpy.core.multiarray._reconstruct`` exactly as torch/NumPy would, without
    importing them.  Instances are cached so that repeated uses are memoised.
    """

    _cache: dict[tuple[str, str], GlobalRef] = {}

    def __new__(cls, module: str, name: str) -> GlobalRef:
        key = (module, name)
        if key not in cls._cache:
            inst = super().__new__(cls)
            inst.module, inst.name = module, name
            cls._cache[key] = inst
        return cls._cache[key]

    module: str
    name: str

    def __call__(self, *args: Any) -> Any:  # pickle's save_reduce wants a callable
        raise TypeError("GlobalRef is a pickling marker only")

    def __repr__(self) -> str:
        return f"GlobalRef({self.module}.{self.name})"


class Reduce:
    """``func(*args)`` followed by an optional BUILD ``state``, for :class:`CompatPickler`."""

    __slots__ = ("func", "args", "state")

    def __init__(self, func: GlobalRef, args: tuple, state: Any = None) -> None:
        self.func, self.args, self.state = func, args, state


class CompatPickler(pickle._Pickler):  # type: ignore[name-defined]
    """Protocol-2 pickler that writes :class:`GlobalRef` / :class:`Reduce` markers verbatim.

    ``py2_strings=True`` writes ``bytes`` as Python 2 ``str`` (BINSTRING opcodes), the
    way the official CIFAR-10 batches were written, instead of ``_codecs.encode``
    calls; ``persistent_id`` is an optional callable (torch storages).
    """

    dispatch = dict(pickle._Pickler.dispatch)  # type: ignore[attr-defined]

    def __init__(
        self,
        file: IO[bytes],
        *,
        py2_strings: bool = False,
        persistent_id: Callable[[Any], Any] | None = None,
    ) -> None:
        super().__init__(file, protocol=2)
        self._py2_strings = py2_strings
        self._pid = persistent_id

    def persistent_id(self, obj: Any) -> Any:
        return None if self._pid is None else self._pid(obj)

    def save_global_ref(self, obj: GlobalRef) -> None:
        self.write(pickle.GLOBAL + obj.module.encode("utf-8") + b"\n" + obj.name.encode("utf-8") + b"\n")
        self.memoize(obj)

    def save_reduce_marker(self, obj: Reduce) -> None:
        self.save_reduce(obj.func, obj.args, obj.state, obj=obj)

    def save_bytes_compat(self, obj: bytes) -> None:
        if not self._py2_strings:
            pickle._Pickler.save_bytes(self, obj)  # type: ignore[attr-defined]
            return
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch[GlobalRef] = save_global_ref
    dispatch[Reduce] = save_reduce_marker
    dispatch[bytes] = save_bytes_compat


def numpy_reduce(arr: np.ndarray, *, py2: bool = False) -> Reduce:
    """``arr`` as NumPy pickles it: ``_reconstruct(ndarray, (0,), b'b')`` + BUILD state.

    ``py2=True`` uses the Python 2 era names (``numpy.core``) and byte strings, as in
    the official CIFAR-10 batches; otherwise NumPy 2 names (``numpy._core``).
    """
    arr = np.ascontiguousarray(arr)
    dt = arr.dtype
    spec = f"{dt.kind}{dt.itemsize}" if dt.kind != "b" else "b1"
    endian = "|" if dt.itemsize == 1 else ("<" if dt.byteorder in ("<", "=") else ">")
    core = "numpy.core" if py2 else "numpy._core"

    def s(text: str) -> Any:
        return text.encode("ascii") if py2 else text

    dtype = Reduce(
        GlobalRef("numpy", "dtype"),
        (s(spec), False, True),
        (3, s(endian), None, None, None, -1, -1, 0),
    )
    return Reduce(
        GlobalRef(f"{core}.multiarray", "_reconstruct"),
        (GlobalRef("numpy", "ndarray"), (0,), b"b"),
        (1, tuple(arr.shape), dtype, False, arr.tobytes()),
    )


# --- cifar10: the official "python version" batches ---------------------------------------

_CIFAR_SHAPE = (32, 32, 3)
_CIFAR_ROW = 32 * 32 * 3  # one image: its R, G then B planes


def _dump(path: Path, obj: dict) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        CompatPickler(fh, py2_strings=True).dump(obj)


def _batch(x: np.ndarray, y: np.ndarray, label: str, classes: list[str], start: int) -> dict:
    data = np.ascontiguousarray(np.asarray(x, dtype=np.uint8).transpose(0, 3, 1, 2)).reshape(len(x), _CIFAR_ROW)
    labels = [int(v) for v in y]
    names = [f"{classes[v].lower().replace(' ', '_')}_s_{start + i:06d}.png".encode() for i, v in enumerate(labels)]
    return {
        b"batch_label": label.encode("ascii"),
        b"labels": labels,
        b"data": numpy_reduce(data, py2=True),
        b"filenames": names,
    }


def write_cifar_python(
    folder: Path,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    class_names: list[str],
    *,
    n_train_batches: int = 5,
) -> Path:
    """Write images in the official ``cifar-10-batches-py`` format; return the folder.

    ``folder`` is used as is when it is named ``cifar-10-batches-py``, otherwise the
    batches go to ``folder/cifar-10-batches-py``.  x: uint8 N×32×32×3 (NHWC); y: ints
    in ``range(len(class_names))``.  The train set is split into ``n_train_batches``
    near-equal batches.  Files are protocol-2 pickles with Python 2 byte strings, as
    in the official archive.
    """
    folder = Path(folder)
    root = folder if folder.name == BATCHES_DIR else folder / BATCHES_DIR
    classes = [str(c) for c in class_names]
    for what, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        x, y = np.asarray(x), np.asarray(y)
        if x.dtype != np.uint8:
            raise ValueError(f"{what}: images must be uint8, got {x.dtype}")
        if x.ndim != 4 or x.shape[1:] != _CIFAR_SHAPE or len(x) != len(y):
            raise ValueError(f"{what}: expected N×32×32×3 images and N labels, got {x.shape} and {y.shape}")
        if y.size and (y.min() < 0 or y.max() >= len(classes)):
            raise ValueError(f"{what}: labels out of range for {len(classes)} classes")
    if n_train_batches < 1:
        raise ValueError("n_train_batches must be at least 1")
    root.mkdir(parents=True, exist_ok=True)
    x_train, y_train = np.asarray(x_train), np.asarray(y_train)
    bounds = np.linspace(0, len(x_train), n_train_batches + 1).round().astype(int)
    per_batch = int(bounds[1] - bounds[0])
    for i in range(n_train_batches):
        lo, hi = int(bounds[i]), int(bounds[i + 1])
        label = f"training batch {i + 1} of {n_train_batches}"
        _dump(root / f"data_batch_{i + 1}", _batch(x_train[lo:hi], y_train[lo:hi], label, classes, lo))
    _dump(
        root / "test_batch",
        _batch(np.asarray(x_test), np.asarray(y_test), "testing batch 1 of 1", classes, 0),
    )
    meta = {
        b"num_cases_per_batch": per_batch,
        b"label_names": [c.encode("utf-8") for c in classes],
        b"num_vis": _CIFAR_ROW,
    }
    _dump(root / "batches.meta", meta)
    return root


@generator
def cifar10(dest: Path, options: dict[str, Any], seed: int) -> None:
    """``cifar-10-python.tar.gz`` holding ``cifar-10-batches-py/`` of generated 32x32 images."""
    train_n, test_n = int(options.get("train_per_class", 500)), int(options.get("test_per_class", 100))
    x_train, y_train = shape_dataset(train_n, 10, 32, 3, seed)
    x_test, y_test = shape_dataset(test_n, 10, 32, 3, seed + 1)
    batches = dest / "batches"
    write_cifar_python(batches / "cifar-10-batches-py", x_train, y_train, x_test, y_test, CIFAR10_CLASSES)
    members = {
        f"cifar-10-batches-py/{f.name}": f.read_bytes() for f in sorted((batches / "cifar-10-batches-py").iterdir())
    }
    deterministic_tar_gz(dest / "cifar-10-python.tar.gz", members)
    for f in (batches / "cifar-10-batches-py").iterdir():
        f.unlink()
    (batches / "cifar-10-batches-py").rmdir()
    batches.rmdir()


# --- gray28 (seeds/003): 28x28 grayscale, as a Kaggle CSV or as MNIST-family IDX files --------

FASHION_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


def write_idx(path: str | os.PathLike, array: np.ndarray, *, gzip: bool = True) -> None:
    """Write ``array`` as IDX (gzip-compressed by default, deterministic bytes: no name/mtime).

    Supported dtypes: uint8, int8, int16, int32, float32, float64 (ValueError otherwise).
    """
    from stages.sources.readers.tabular import IDX_TYPES  # the reader's table of type codes (and pandas)

    codes = {dt.newbyteorder("="): code for code, dt in IDX_TYPES.items()}
    array = np.asarray(array)
    native = array.dtype.newbyteorder("=") if array.dtype.byteorder not in "=|" else array.dtype
    if native not in codes:
        raise ValueError(f"IDX cannot hold dtype {array.dtype}; use uint8/int8/int16/int32/float32/float64")
    if array.ndim == 0 or array.ndim > 255 or any(d >= 2**32 for d in array.shape):
        raise ValueError(f"IDX cannot hold shape {array.shape}")
    code = codes[native]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = np.ascontiguousarray(array, dtype=IDX_TYPES[code]).tobytes()
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        if gzip:
            with gzip_module.GzipFile(filename="", mode="wb", fileobj=fh, mtime=0) as gz:
                gz.write(header)
                gz.write(data)
        else:
            fh.write(header)
            fh.write(data)


def write_label_csv(
    path: str | os.PathLike, x: np.ndarray, y: np.ndarray | None = None, *, header: bool = True
) -> None:
    """Write images (N x H x W or N x P, integers 0..255) and optional labels as a Kaggle CSV.

    Header ``label,pixel0,...`` (``pixel0,...`` without labels) unless ``header=False``.
    """
    x = np.asarray(x)
    flat = x.reshape(len(x), -1)
    if flat.size and (flat.min() < 0 or flat.max() > 255 or not np.array_equal(flat, np.round(flat))):
        raise ValueError("pixel values must be integers in 0..255")
    columns = [f"pixel{i}" for i in range(flat.shape[1])]
    table = flat.astype(np.int64)
    if y is not None:
        y = np.asarray(y)
        if y.shape != (len(x),) or not np.array_equal(y, np.round(y)):
            raise ValueError(f"labels must be N={len(x)} integers, got shape {y.shape}")
        table = np.column_stack([y.astype(np.int64), table])
        columns = ["label", *columns]
    with atomic_path(path) as tmp, open(tmp, "w", newline="\n") as fh:
        if header:
            fh.write(",".join(columns) + "\n")
        if len(table):
            np.savetxt(fh, table, fmt="%d", delimiter=",")


@generator
def fashion_mnist(dest: Path, options: dict[str, Any], seed: int) -> None:
    """Generated 28x28 grayscale images of ``classes`` classes in the study's competition form.

    ``format: label_csv`` (default): Kaggle's ``train.csv`` (label + 784 pixels, with header) and
    ``test.csv`` (pixels only, unless ``test_labels: true``). ``format: mnist_idx``: the four
    gzip IDX files under Fashion-MNIST's official names (the format names of params.yaml's sources).
    """
    classes = int(options.get("classes", 10))
    train_n, test_n = int(options.get("train_per_class", 100)), int(options.get("test_per_class", 10))
    x_train, y_train = shape_dataset(train_n, classes, 28, 1, seed)
    x_test, y_test = shape_dataset(test_n, classes, 28, 1, seed + 1)
    x_train, x_test = x_train[..., 0], x_test[..., 0]
    fmt = options.get("format", "label_csv")
    if fmt == "label_csv":
        write_label_csv(dest / "train.csv", x_train, y_train)
        write_label_csv(dest / "test.csv", x_test, y_test if options.get("test_labels", False) else None)
    elif fmt == "mnist_idx":
        arrays = {"train_images": x_train, "train_labels": y_train, "test_images": x_test, "test_labels": y_test}
        for key, name in FASHION_MNIST_FILES.items():
            write_idx(dest / name, arrays[key].astype("uint8"))
    else:
        raise ValueError(f"fashion_mnist generator: format must be label_csv or mnist_idx, got {fmt!r}")


# --- pets (seeds/000 part 1): the Oxford-IIIT Pet archives ------------------------------------

# The 37 breeds in the official class-id order (list.txt CLASS-ID 1..37, as tensorflow-datasets'
# oxford_iiit_pet builder lists them): cats capitalised, dogs lower-case.
PET_BREEDS = (
    "Abyssinian american_bulldog american_pit_bull_terrier basset_hound beagle Bengal Birman Bombay boxer "
    "British_Shorthair chihuahua Egyptian_Mau english_cocker_spaniel english_setter german_shorthaired "
    "great_pyrenees havanese japanese_chin keeshond leonberger Maine_Coon miniature_pinscher newfoundland "
    "Persian pomeranian pug Ragdoll Russian_Blue saint_bernard samoyed scottish_terrier shiba_inu Siamese "
    "Sphynx staffordshire_bull_terrier wheaten_terrier yorkshire_terrier"
).split()
# tensorflow-datasets' _CORRUPT_SAMPLES: files of the real archive that are "mostly wrong format"
# (some with an alpha channel). Which odd format each one gets here is our choice.
PET_ODD_FILES = (
    "beagle_116 chihuahua_121 Abyssinian_5 Abyssinian_34 Egyptian_Mau_14 Egyptian_Mau_139 Egyptian_Mau_145 "
    "Egyptian_Mau_156 Egyptian_Mau_167 Egyptian_Mau_177 Egyptian_Mau_186 Egyptian_Mau_191"
).split()
_ODD_FORMATS = ("png_rgba", "gray_jpeg", "cmyk_jpeg", "png_rgb")


def _encode_pet_image(img, kind: str) -> bytes:
    import cv2

    if kind == "png_rgba":  # PNG data under a .jpg name, with an alpha channel
        rgba = cv2.cvtColor(img, cv2.COLOR_RGB2BGRA)
        return cv2.imencode(".png", rgba)[1].tobytes()
    if kind == "png_rgb":
        return cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))[1].tobytes()
    if kind == "gray_jpeg":
        return cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2GRAY))[1].tobytes()
    if kind == "cmyk_jpeg":
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(img).convert("CMYK").save(buf, format="JPEG", quality=90)
        return buf.getvalue()
    return cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


@generator
def pets(dest: Path, options: dict[str, Any], seed: int) -> None:
    """``images.tar.gz`` + ``annotations.tar.gz`` laid out as the official Oxford-IIIT Pet archives.

    Both are uncompressed tar under a .tar.gz name, as the real ones. ``images/<Breed>_<n>.jpg``
    for all 37 breeds (plus the 12 odd-format files tensorflow-datasets names, three ``.mat``
    files and a few images that no list or trimap covers); ``annotations/`` holds ``trimaps/``
    (PNG, values 1..3, plus macOS ``._<name>.png`` junk), ``xmls/`` (head boxes, trainval only),
    ``list.txt``, ``trainval.txt`` and ``test.txt``.
    """
    import cv2
    import numpy as np

    from stages.sources.synthetic import pet_scene

    per_breed = int(options.get("images_per_breed", 16))
    rng = np.random.default_rng(seed)
    images: dict[str, bytes] = {}
    ann: dict[str, bytes] = {}
    rows: dict[str, list[str]] = {"trainval": [], "test": []}
    breed_ids = {"cat": 0, "dog": 0}
    odd = iter(_ODD_FORMATS * 3)
    for class_id, breed in enumerate(PET_BREEDS, start=1):
        dog = breed[0].islower()
        species = "dog" if dog else "cat"
        breed_ids[species] += 1
        odd_names = [n for n in PET_ODD_FILES if n.rsplit("_", 1)[0] == breed]
        names = [f"{breed}_{n}" for n in range(1, per_breed + 1) if f"{breed}_{n}" not in odd_names] + odd_names
        for i, name in enumerate(names):
            h, w = (int(v) for v in rng.integers(110, 200, size=2))
            img, trimap = pet_scene(rng, h, w, dog)
            kind = next(odd) if name in PET_ODD_FILES else "jpeg"
            images[f"images/{name}.jpg"] = _encode_pet_image(img, kind)
            ann[f"annotations/trimaps/{name}.png"] = cv2.imencode(".png", trimap)[1].tobytes()
            ann[f"annotations/trimaps/._{name}.png"] = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(60)
            part = "trainval" if i % 2 == 0 else "test"
            rows[part].append(f"{name} {class_id} {2 if dog else 1} {breed_ids[species]}")
            if part == "trainval":
                ann[f"annotations/xmls/{name}.xml"] = (
                    f"<annotation><filename>{name}.jpg</filename><size><width>{w}</width><height>{h}</height>"
                    f"<depth>3</depth></size><object><name>{species}</name><bndbox><xmin>1</xmin><ymin>1</ymin>"
                    f"<xmax>{w // 2}</xmax><ymax>{h // 2}</ymax></bndbox></object></annotation>\n"
                ).encode()
        # one image per breed that no list or trimap covers (the real archive has such images)
        extra, _ = pet_scene(rng, 120, 150, dog)
        images[f"images/{breed}_{per_breed + 500}.jpg"] = _encode_pet_image(extra, "jpeg")
    for n in (100, 101, 102):  # MATLAB files among the images
        images[f"images/Abyssinian_{n}.mat"] = b"MATLAB 5.0 MAT-file, Platform: GLNXA64" + bytes(90)
    header = (
        "#Image CLASS-ID SPECIES BREED ID\n#ID: 1:37 Class ids\n#SPECIES: 1:Cat 2:Dog\n"
        "#BREED ID: 1-25:Cat 1:12:Dog\n#All images with 1st letter as captial are cat images\n"
        "#images with small first letter are dog images\n"
    )
    everything = sorted(rows["trainval"] + rows["test"], key=lambda r: r.split()[0].lower())
    ann["annotations/list.txt"] = (header + "\n".join(everything) + "\n").encode()
    for part, lines in rows.items():
        ann[f"annotations/{part}.txt"] = ("\n".join(lines) + "\n").encode()
    deterministic_tar_gz(dest / "images.tar.gz", images, compress=False)
    deterministic_tar_gz(dest / "annotations.tar.gz", ann, compress=False)


# --- natural (seeds/004): Kaggle "Natural Images", an image-folder zip ------------------------

NATURAL_CLASSES = ["airplane", "car", "cat", "dog", "flower", "fruit", "motorbike", "person"]
# stages/sources/synthetic.py shapes that stay apart under the study's flips and rotations up to 144 degrees
# (not both hbars/vbars, nor both plus/cross)
NATURAL_SHAPES = [0, 1, 2, 3, 5, 6, 8, 9]  # disc square triangle hbars ring plus checker dots


def deterministic_zip(path: Path, members: dict[str, bytes]) -> None:
    """A zip whose bytes depend only on its content (sorted entries, fixed timestamps)."""
    import zipfile

    with zipfile.ZipFile(path, "w") as zf:
        for d in sorted({str(Path(n).parent) + "/" for n in members} - {"./"}):
            zf.writestr(zipfile.ZipInfo(d, date_time=(2019, 11, 11, 0, 0, 0)), b"")
        for name in sorted(members):
            info = zipfile.ZipInfo(name, date_time=(2019, 11, 11, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, members[name])


@generator
def natural_images(dest: Path, options: dict[str, Any], seed: int) -> None:
    """``natural-images.zip`` as Kaggle's client downloads it: ``natural_images/<class>/<class>_NNNN.jpg``.

    Eight classes of generated shapes (stages/sources/synthetic.py), each image its own size (``min_size`` to
    ``max_size`` pixels a side, not square), as the real set's. Odd files so that those paths run in
    every default run: a grayscale JPEG and an RGBA PNG in each of the first classes, one truncated
    (corrupt) JPEG and a Windows ``Thumbs.db`` (the real set has one in 7 of its 8 folders).
    """
    import cv2
    import numpy as np

    from stages.sources.synthetic import shape_image

    per_class = int(options.get("per_class", 40))
    lo, hi = int(options.get("min_size", 60)), int(options.get("max_size", 160))
    rng = np.random.default_rng(seed)
    members: dict[str, bytes] = {}
    for label, name in enumerate(NATURAL_CLASSES):
        for i in range(per_class):
            h, w = (int(v) for v in rng.integers(lo, hi + 1, size=2))
            img = cv2.resize(shape_image(NATURAL_SHAPES[label], 64, 3, rng), (w, h), interpolation=cv2.INTER_LINEAR)
            bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
            stem = f"natural_images/{name}/{name}_{i:04d}"
            if i == 1 and label % 2 == 0:  # one-channel JPEG
                members[f"{stem}.jpg"] = cv2.imencode(".jpg", cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))[1].tobytes()
            elif i == 1:  # a PNG with an alpha channel
                members[f"{stem}.png"] = cv2.imencode(".png", cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA))[1].tobytes()
            else:
                members[f"{stem}.jpg"] = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    # a download cut short: the first 200 bytes of a JPEG (header only, no scan data)
    members[f"natural_images/car/car_{per_class:04d}.jpg"] = members["natural_images/car/car_0000.jpg"][:200]
    # Windows' thumbnail cache (an OLE compound file), as in the real archive
    members["natural_images/airplane/Thumbs.db"] = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504)
    deterministic_zip(dest / "natural-images.zip", members)
