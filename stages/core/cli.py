"""The one command-line convention of every ``python -m stages.<module>``, and its progress bars.

:func:`run` binds the command line's words to ``main``'s positional parameters, answers
``-h``/``--help`` itself (usage from ``main``'s signature, description from the module's and
``main``'s docstrings) without running anything, prints a usage line and exits 2 when words are
missing or extra, and prints the project's own errors as one line (exit 1). Ctrl-C is one
``interrupted:`` line too (exit 130, as a shell reports SIGINT), saying what the stage keeps when it
said so with :func:`on_interrupt`. A ``main(name, *options)`` parses its options itself (argparse), so
``<name> --help`` is its own and lists them.
"""

from __future__ import annotations

import contextlib
import inspect
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stages.core.errors import PipelineError

if TYPE_CHECKING:
    from tqdm import tqdm

HELP_FLAGS = ("-h", "--help")


def program(main: Callable[..., Any]) -> str:
    """``python -m stages.<module>`` for ``main``: its module's real name, even when run as ``__main__``."""
    spec = main.__globals__.get("__spec__") if hasattr(main, "__globals__") else None
    name = spec.name if spec is not None else main.__module__
    if name == "__main__":  # run as a file (python stages/x.py): no spec, name it after the file
        name = f"stages.{Path(main.__globals__.get('__file__', 'main')).stem}"
    return f"python -m {name}"


def usage(main: Callable[..., Any]) -> str:
    """``python -m stages.<module> <name> [<options>...]`` from ``main``'s signature."""
    words = []
    for p in inspect.signature(main).parameters.values():
        if p.kind is p.VAR_POSITIONAL:
            words.append(f"[<{p.name}>...]")
        elif p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            words.append(f"<{p.name}>" if p.default is p.empty else f"[<{p.name}>]")
    return " ".join([program(main), *words])


def help_text(main: Callable[..., Any]) -> str:
    """Usage line, the module's one-paragraph description, and ``main``'s own docstring if it has one."""
    module_doc = main.__globals__.get("__doc__") if hasattr(main, "__globals__") else None
    description = inspect.cleandoc(module_doc or "").split("\n\n")[0].strip()
    if description.endswith(":"):  # the paragraph introduced a usage example
        description = description[:-1] + "."
    parts = [f"usage: {usage(main)}", description, inspect.cleandoc(main.__doc__ or "")]
    first = next(iter(inspect.signature(main).parameters.values()), None)
    if _takes_options(main) and first is not None and first.kind is not first.VAR_POSITIONAL:
        parts.append(f"`{program(main)} <{first.name}> --help` lists the options.")
    return "\n\n".join(part for part in parts if part)


def _takes_options(main: Callable[..., Any]) -> bool:
    return any(p.kind is p.VAR_POSITIONAL for p in inspect.signature(main).parameters.values())


def _wants_help(main: Callable[..., Any], argv: list[str]) -> bool:
    """A help flag anywhere, except after the named words of a ``main(name, *options)``: its
    options parser answers that ``--help`` itself (and lists the options)."""
    fixed = sum(p.kind is not p.VAR_POSITIONAL for p in inspect.signature(main).parameters.values())
    words = argv[:fixed] if _takes_options(main) and fixed else argv
    return any(w in HELP_FLAGS for w in words)


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


def run(main: Callable[..., Any], argv: list[str]) -> None:
    """Run ``main(*argv)`` as the command line of ``python -m stages.<module>`` (see the module docstring)."""
    if _wants_help(main, argv):
        print(help_text(main))
        sys.exit(0)
    try:
        inspect.signature(main).bind(*argv)
    except TypeError:
        print(f"usage: {usage(main)}", file=sys.stderr)
        sys.exit(2)
    try:
        main(*argv)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt as exc:
        # every output goes through an atomic rename (stages/core/files.py): a stop leaves no half-written file
        command = " ".join([program(main), *argv])
        what = (
            str(exc) if isinstance(exc, Interrupted) else f"{command} stopped; no output is half-written, run it again"
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
