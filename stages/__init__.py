"""The CNN studies pipeline: DVC stage entry points (``python -m stages.<stage>``) and their library."""

import contextlib
import importlib.abc
import importlib.util
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

# TensorFlow's C++ log: 2 drops INFO and WARNING (oneDNN and CPU-instruction notices), keeps ERROR and
# FATAL; TF_CPP_MIN_LOG_LEVEL=0 in the environment shows everything. (The CPU install, tensorflow-cpu,
# has no CUDA probes to complain; the GPU install's probes find their GPU.)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# OpenCV reads its decode-size limit once, at import: set it before anything imports cv2,
# so an image claiming enormous dimensions is refused instead of allocated.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(2**28))
# Take GPU memory as needed rather than all of it up front, so that queue workers
# (`dvc queue start -j N`) can share one GPU.
os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")

# Where oneDNN is on by default (CPUs with AVX-512 VNNI or AMX), TensorFlow says so at import, twice,
# before its logging reads TF_CPP_MIN_LOG_LEVEL: these lines are dropped unless the level is 0.
PRE_LOGGING_NOTICES = (
    "All log messages before absl::InitializeLog() is called are written to STDERR",
    "oneDNN custom operations are on.",
)


@contextlib.contextmanager
def stderr_without(notices: tuple[str, ...]) -> Iterator[None]:
    """Run the body with the process's stderr (file descriptor 2, which C++ code writes to) going to a
    temporary file, then write its lines back, less those containing one of ``notices``."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if not any(n in line for n in notices)))
            sys.stderr.flush()


class QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Imports ``tensorflow`` (whoever asks first: keras, or a stage) inside :func:`stderr_without`."""

    def find_spec(
        self, name: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once: the real finders do the looking up
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            exec_module = spec.loader.exec_module

            def exec_quietly(module: ModuleType) -> None:
                with stderr_without(PRE_LOGGING_NOTICES):
                    exec_module(module)

            spec.loader.exec_module = exec_quietly
        return spec


if os.environ["TF_CPP_MIN_LOG_LEVEL"] != "0" and "tensorflow" not in sys.modules:
    sys.meta_path.insert(0, QuietTensorFlowImport())
