"""Scripts `benchmarks.peers` runs inside each peer's own venv: they import the peer and torch
only (never wbc_ray), score one slide, and write what they found as JSON.
"""
