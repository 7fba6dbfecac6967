"""The one command-line convention of every ``python -m stages.<module>``, and its progress bars.

Each entry module builds an argparse parser with :func:`parser` (``prog`` is ``python -m stages.<module>``,
the description its docstring) and runs ``main`` through :func:`run`, which first sets the process's
environment defaults (:func:`set_environment_defaults`), then parses the command line (argparse answers
``-h``/``--help``, and a usage error is a usage line and exit 2), then calls ``main`` with the parsed
arguments as keywords. The project's own errors are one ``error:`` line (exit 1); Ctrl-C is one
``interrupted:`` line (exit 130, as a shell reports SIGINT), saying what the stage keeps when it said so
with :func:`on_interrupt`.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stages.core.errors import PipelineError

if TYPE_CHECKING:
    from tqdm import tqdm

#: The environment every command starts with; a value the user already set wins. Both libraries read
#: theirs when they load (measured: OpenCV 5.0 at ``import cv2``, TensorFlow 2.21 during
#: ``import tensorflow``; set later, neither sees it), so entry modules import them inside functions.
ENVIRONMENT_DEFAULTS = {
    # TensorFlow's C++ log: 2 drops INFO and WARNING (the CPU-instruction notice), keeps ERROR and FATAL;
    # 0 shows everything. Its oneDNN notice comes before TensorFlow applies the level: it stays.
    "TF_CPP_MIN_LOG_LEVEL": "2",
    # OpenCV refuses an image whose header claims more pixels than this before it allocates anything
    # (stages/sources/readers/images.py checks that the limit holds, and sets the same default itself).
    "OPENCV_IO_MAX_IMAGE_PIXELS": str(2**28),
    # Take GPU memory as needed rather than all of it up front, so that queue workers
    # (`dvc queue start -j N`) can share one GPU.
    "TF_FORCE_GPU_ALLOW_GROWTH": "true",
}


def set_environment_defaults() -> None:
    """Set :data:`ENVIRONMENT_DEFAULTS` where the environment leaves them unset (the first thing a command does)."""
    for name, value in ENVIRONMENT_DEFAULTS.items():
        os.environ.setdefault(name, value)


def program(main: Callable[..., Any]) -> str:
    """``python -m stages.<module>`` for ``main``: its module's real name, even when run as ``__main__``."""
    spec = main.__globals__.get("__spec__") if hasattr(main, "__globals__") else None
    name = spec.name if spec is not None else main.__module__
    if name == "__main__":  # run as a file (python stages/x.py): no spec, name it after the file
        name = f"stages.{Path(main.__globals__.get('__file__', 'main')).stem}"
    return f"python -m {name}"


def parser(main: Callable[..., Any]) -> argparse.ArgumentParser:
    """An argparse parser for ``main``'s command: ``prog`` its module's, the description its module's docstring."""
    module_doc = main.__globals__.get("__doc__") if hasattr(main, "__globals__") else None
    return argparse.ArgumentParser(
        prog=program(main),
        description=inspect.cleandoc(module_doc or ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,  # the docstring's own line breaks
    )


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with the stage's own one line: what it keeps and how to go on."""


@contextlib.contextmanager
def on_interrupt(note: Callable[[], str]) -> Iterator[None]:
    """Within the block, Ctrl-C ends the command with ``note()``'s line (called then, so that it can look
    at what is on disk at that moment) instead of :func:`run`'s generic one."""
    try:
        yield
    except Interrupted:
        raise  # an inner block's note knows more
    except KeyboardInterrupt:
        raise Interrupted(note()) from None


def run(main: Callable[..., Any], command: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> None:
    """Run ``main(**arguments)`` as the command line of ``python -m stages.<module>`` (see the module docstring);
    ``argv`` defaults to ``sys.argv[1:]``."""
    set_environment_defaults()
    argv = list(sys.argv[1:] if argv is None else argv)
    arguments = vars(command.parse_args(argv))
    try:
        main(**arguments)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt as exc:
        # every output goes through an atomic rename (stages/core/files.py): a stop leaves no half-written file
        what = (
            str(exc)
            if isinstance(exc, Interrupted)
            else f"{' '.join([command.prog, *argv])} stopped; no output is half-written, run it again"
        )
        print(f"interrupted: {what}", file=sys.stderr)
        sys.exit(130)


def progress_bar(total: float | None, desc: str, *, unit: str = "it", enabled: bool = True) -> tqdm:
    """A tqdm bar on stderr, drawn only when stderr is a terminal (``disable=None``): DVC stage logs
    and CI get nothing. ``unit="B"`` counts bytes (kB, MB... with rate and ETA); ``total=None``
    counts without a percentage. ``enabled=False`` draws nothing anywhere. Use it as a context manager."""
    from tqdm import tqdm

    scale = {"unit_scale": True} if unit == "B" else {}  # kB, MB, GB (powers of 1000)
    disable = None if enabled else True  # None: tqdm decides, drawing only if stderr is a terminal
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=disable, dynamic_ncols=True, **scale)
