"""Project errors that callers catch without importing the heavy packages that raise them."""

from __future__ import annotations


class WeightsUnavailable(RuntimeError):
    """Pretrained weights could not be fetched or read; the message says what to do instead."""


class ReleaseError(RuntimeError):
    """A model release failed its integrity check (a file missing, cut short, altered or not
    listed) or its manifest is unreadable; the message names the file."""
