"""One error hierarchy for the whole product: library code raises these, and the `vrlhf` CLI (only there) turns
them into one line on stderr and exit code 2. Anything else is a bug and keeps its traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable


class VrlhfError(Exception):
    """Base of every error a user can fix: the message is one line that names the file, row, field or flag."""


class DataError(VrlhfError, ValueError):
    """A dataset, export or data row that cannot be used as asked."""


class ConfigError(VrlhfError, ValueError):
    """A flag, config file or combination of settings that cannot be honoured."""


class ModelError(VrlhfError, ValueError):
    """A model directory or hub id that cannot be loaded for the task (not a model, unsupported family, ...)."""


class LabelError(VrlhfError, ValueError):
    """A request the labeler refuses (unknown comparison, foreign lease, bad choice); nothing was written."""


def run_command(prog: str, main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    """Run a command's `main(argv)` for a console entry point: a VrlhfError becomes one line on stderr, exit code 2."""
    try:
        return main(argv) or 0
    except VrlhfError as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return 2
