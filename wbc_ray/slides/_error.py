"""`SlideError`, the one failure every slide reader raises; a leaf, so the readers and the
fetcher can both raise it without importing each other.
"""

from __future__ import annotations

import os

from ..errors import WbcRayError


class SlideError(WbcRayError):
    """A slide that cannot be used; the message names the file and the reason."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{_display(self.path)}: {reason}")


def _display(path: str) -> str:
    # Hostile names (NUL, control characters, huge lengths) must not garble messages or logs.
    shown = path.encode("unicode_escape", "backslashreplace").decode("ascii")
    return shown if len(shown) <= 300 else shown[:140] + "..." + shown[-140:]
