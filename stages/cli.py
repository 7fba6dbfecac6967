"""Entry point wrapper: the project's own errors print as one line and exit 1."""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable

from stages.errors import PipelineError


def run(main: Callable[..., None], argv: list[str]) -> None:
    try:
        inspect.signature(main).bind(*argv)
    except TypeError:
        params = " ".join(f"<{p}>" for p in inspect.signature(main).parameters)
        print(f"usage: python -m {main.__module__} {params}", file=sys.stderr)
        sys.exit(2)
    try:
        main(*argv)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
