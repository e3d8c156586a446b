"""The one-off path on one machine: the release's networks in this process, without Ray."""

from ._ensemble import LocalEnsemble

__all__ = ["LocalEnsemble"]
