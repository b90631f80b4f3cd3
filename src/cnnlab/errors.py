"""User-facing errors and the one place that turns them into a clean exit."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import TypeVar


class CnnlabError(Exception):
    """A problem with the user's input or environment, not a bug.

    The message is shown alone on one line: it names the bad input and the fix.
    """


class ConfigError(CnnlabError):
    """params.yaml holds an unknown key, a wrong type or a value out of range."""


class DataError(CnnlabError):
    """A dataset file is missing, unreachable or does not match its checksum."""


F = TypeVar("F", bound=Callable[..., object])


def exits_cleanly(main: F) -> F:
    """Run a stage's main; a CnnlabError becomes one line on stderr and exit 1.

    In a stage run as several processes (cnnlab.distributed) they all meet the same error: rank 0 says it.
    """

    @functools.wraps(main)
    def wrapper(*args: object, **kwargs: object) -> object:
        try:
            return main(*args, **kwargs)
        except CnnlabError as error:
            if os.environ.get("RANK", "0") == "0":
                print(f"error: {error}", file=sys.stderr)
            raise SystemExit(1) from None

    return wrapper  # type: ignore[return-value]


def warn(message: str) -> None:
    """One line on stderr for something the user should know that does not stop the stage."""
    print(f"cnnlab: warning: {message}", file=sys.stderr)
