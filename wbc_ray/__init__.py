"""wbc-ray: distributed ALL screening of whole-slide images."""

__version__ = "0.1.0"
