"""KubeRay RayService and RayCluster resources, rendered from `configs/serve*.yaml`.

The Serve config stays the one source: the RayService embeds it whole as `serveConfigV2`, and the
worker groups are sized from what its deployments ask for. `wbc-ray deploy render` writes them;
a test checks that the committed files in `deploy/` equal a fresh render.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..config import REPO_ROOT, VERSION

RAY_VERSION = "2.60.0"
IMAGE = "wbc-ray"
# File name in deploy/ -> (kind, Serve config it is rendered from, accelerator of its workers).
RESOURCES: dict[str, tuple[str, str, str]] = {
    "rayservice.yaml": ("RayService", "configs/serve.gpu.yaml", "cuda"),
    "rayservice.cpu.yaml": ("RayService", "configs/serve.yaml", "cpu"),
    "raycluster.yaml": ("RayCluster", "configs/serve.gpu.yaml", "cuda"),
}
HEADER = (
    "# Rendered by `wbc-ray deploy render` from {source}; do not edit (a test compares it with a\n"
    "# fresh render). Image {image}: `make image VARIANT={variant}` (deploy/Dockerfile).\n"
)


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the embedded Serve config) as literal blocks, readable in review."""


_Dumper.add_representer(
    str,
    lambda d, v: d.represent_scalar("tag:yaml.org,2002:str", v, style="|" if "\n" in v else None),
)


def image_tag(variant: str, version: str = VERSION) -> str:
    """The container image of one variant (`cpu` or `cuda`), as `make image` tags it."""
    return f"{IMAGE}:{version}-{variant}"


def _container(image: str, cpu: str, memory: str, gpus: int = 0) -> dict[str, Any]:
    limits: dict[str, Any] = {"cpu": cpu, "memory": memory}
    if gpus:
        limits["nvidia.com/gpu"] = str(gpus)
    return {
        "name": "ray",
        "image": image,
        # The release is in the image (weights/, verified at load). The service's results (the
        # job database, uploads, Zarr stores) are on a volume every pod mounts (ReadWriteMany);
        # slides may come from object storage, credentials from a Secret through the standard
        # variables.
        "env": [
            {"name": "WBC_RAY_RESULTS", "value": "/results"},
            {"name": "RAY_USAGE_STATS_ENABLED", "value": "0"},
            # Reachable beyond the pod: accounts on (tokens: `wbc-ray token create` in the head pod).
            {"name": "WBC_RAY_AUTH", "value": "1"},
        ],
        "envFrom": [{"secretRef": {"name": "wbc-ray-s3", "optional": True}}],
        "ports": [{"containerPort": 8000, "name": "serve"}],
        "volumeMounts": [{"name": "results", "mountPath": "/results"}],
        "resources": {"limits": limits, "requests": dict(limits)},
    }


def _pod(container: dict[str, Any], gpu: bool) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [container],
        "volumes": [{"name": "results", "persistentVolumeClaim": {"claimName": "wbc-ray-results"}}],
    }
    if gpu:
        spec["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    return {"spec": spec}


def cluster_spec(serve: dict[str, Any], variant: str, version: str = VERSION) -> dict[str, Any]:
    """The Ray cluster: a head that runs no replicas (num-cpus 0: the controller, proxy and job
    drivers only) and one autoscaling worker group of the variant.
    """
    head_image = image_tag("cpu", version)
    worker_image = image_tag(variant, version)
    gpu = variant == "cuda"
    deployments = [d for app in serve["applications"] for d in app.get("deployments", [])]
    most = sum(
        int((d.get("autoscaling_config") or {}).get("max_replicas", d.get("num_replicas", 1)))
        for d in deployments
    )
    worker = {
        "groupName": "gpu" if gpu else "cpu",
        "replicas": 1,
        "minReplicas": 1,
        # One GPU per pod: the first replica of every CNN fits on one (configs/serve.gpu.yaml), and
        # about three replicas share a GPU; enough pods for every deployment at its most.
        "maxReplicas": max(2, min(16, most // 3)),
        "rayStartParams": {},
        "template": _pod(_container(worker_image, "8", "32Gi", 1 if gpu else 0), gpu),
    }
    return {
        "rayVersion": RAY_VERSION,
        "enableInTreeAutoscaling": True,
        "autoscalerOptions": {
            "upscalingMode": "Default",
            # A GPU pod idle this long goes back (Serve scales replicas down first).
            "idleTimeoutSeconds": 300,
        },
        "headGroupSpec": {
            "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0"},
            "template": _pod(_container(head_image, "4", "16Gi"), False),
        },
        "workerGroupSpecs": [worker],
    }


def _load(serve_config: str | Path) -> dict[str, Any]:
    path = Path(serve_config)
    path = path if path.is_absolute() else REPO_ROOT / path
    return dict(yaml.safe_load(path.read_text()))


def render_rayservice(
    serve_config: str | Path, variant: str = "cuda", version: str = VERSION
) -> dict[str, Any]:
    """A RayService whose `serveConfigV2` is the Serve config, on a cluster of `variant` workers."""
    serve = _load(serve_config)
    # The Serve config's own http_options bind 127.0.0.1 for local use; in a pod the proxy must
    # listen on the pod's address for the Service in front of it.
    embedded = {k: v for k, v in serve.items() if k not in {"http_options", "proxy_location"}}
    embedded = {"proxy_location": "EveryNode", "http_options": {"host": "0.0.0.0", "port": 8000}, **embedded}
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": "wbc-ray", "labels": {"app.kubernetes.io/name": "wbc-ray"}},
        "spec": {
            "serveConfigV2": yaml.safe_dump(embedded, sort_keys=False),
            # A new serveConfigV2 (new weights, more replicas) is applied in place; a new cluster
            # spec (new image) brings up a new cluster and moves traffic once it is ready.
            "upgradeStrategy": {"type": "NewCluster"},
            "rayClusterConfig": cluster_spec(serve, variant, version),
        },
    }


def render_raycluster(
    serve_config: str | Path, variant: str = "cuda", version: str = VERSION
) -> dict[str, Any]:
    """A bare RayCluster (for `wbc-ray analyze` batch jobs or `serve deploy` by hand)."""
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": "wbc-ray-batch", "labels": {"app.kubernetes.io/name": "wbc-ray"}},
        "spec": cluster_spec(_load(serve_config), variant, version),
    }


def to_yaml(doc: dict[str, Any], source: str, variant: str, version: str = VERSION) -> str:
    """The resource file as committed: a header naming its source, then the document."""
    head = HEADER.format(source=source, image=image_tag(variant, version), variant=variant)
    return head + yaml.dump(doc, Dumper=_Dumper, sort_keys=False)


def render_all(version: str = VERSION) -> dict[str, str]:
    """Every resource file of `deploy/`, by file name."""
    out = {}
    for name, (kind, source, variant) in RESOURCES.items():
        render = render_rayservice if kind == "RayService" else render_raycluster
        out[name] = to_yaml(render(source, variant, version), source, variant, version)
    return out
