"""wbc-ray: distributed ALL screening of whole-slide images."""

from .config import VERSION as __version__

__all__ = ["__version__"]
