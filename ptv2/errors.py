"""The one exception type users see as a single clear line, and argparse that fails the same way."""

from __future__ import annotations

import argparse
from typing import NoReturn


class UserError(Exception):
    """A problem the user can fix (bad config, missing data or weights); printed as one line, exit 2."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (exit 2), like every other ptv2 error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")
