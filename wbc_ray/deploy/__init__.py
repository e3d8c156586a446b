"""Deployment beyond one machine: KubeRay manifests rendered from the Serve configs, and their
validation against KubeRay's CRD schemas.
"""

from ._kuberay import MANIFESTS, render_all, render_raycluster, render_rayservice
from ._validate import ManifestError, crd_schema, validate_manifest

__all__ = [
    "MANIFESTS",
    "ManifestError",
    "crd_schema",
    "render_all",
    "render_raycluster",
    "render_rayservice",
    "validate_manifest",
]
