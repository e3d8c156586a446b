"""Project errors that callers catch without importing the heavy packages that raise them.

Every error wbc-ray raises for a user's input or files derives from `WbcRayError`; the CLI turns
those into `wbc-ray: error: ...` and exit code 2.
"""

from __future__ import annotations


class WbcRayError(Exception):
    """Base of wbc-ray's own errors: something about the user's input, files or setup, with a
    message that says what and, where it can, what to do.
    """


class UserError(WbcRayError):
    """A problem with the user's input on the command line, reported without a traceback."""


class WeightsUnavailable(WbcRayError, RuntimeError):
    """Pretrained weights could not be fetched or read; the message says what to do instead."""


class ReleaseError(WbcRayError, RuntimeError):
    """A model release failed its integrity check (a file missing, cut short, altered or not
    listed) or its manifest is unreadable; the message names the file.
    """


# The built-in base each keeps lets callers that caught ValueError / FileNotFoundError /
# FileExistsError before this hierarchy existed still catch them.
class InvalidInput(WbcRayError, ValueError):
    """A value the user gave (a flag, a setting, a manifest row, a fusion name) is malformed or out
    of range; the message names it and the range.
    """


class MissingInput(WbcRayError, FileNotFoundError):
    """A file or folder the user named, or the default one, is not there."""


class OutputExists(WbcRayError, FileExistsError):
    """The output path already holds something else; nothing was overwritten."""


class SetupError(WbcRayError, RuntimeError):
    """The service cannot start as set up (a database from a newer version, a results folder it
    cannot write, a port in use); the message says what to do.
    """
