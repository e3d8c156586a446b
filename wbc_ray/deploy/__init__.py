"""Deployment beyond one machine: KubeRay resources rendered from the Serve configs, and their
validation against KubeRay's CRD schemas.
"""

from ._kuberay import RESOURCES, render_all, render_raycluster, render_rayservice
from ._validate import ResourceError, crd_schema, validate_resource

__all__ = [
    "RESOURCES",
    "ResourceError",
    "crd_schema",
    "render_all",
    "render_raycluster",
    "render_rayservice",
    "validate_resource",
]
