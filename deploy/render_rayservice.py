"""Render a KubeRay RayService manifest whose serveConfigV2 is configs/serve*.yaml (one source of truth).

python deploy/render_rayservice.py configs/serve.gpu.yaml > deploy/rayservice.yaml
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the embedded Serve config) as literal blocks, readable in review."""


_Dumper.add_representer(
    str,
    lambda d, v: d.represent_scalar("tag:yaml.org,2002:str", v, style="|" if "\n" in v else None),
)


def render(serve_config: Path, image: str = "wbc-ray:latest", gpu_workers: int = 1) -> str:
    serve = yaml.safe_load(serve_config.read_text())
    container = {
        "name": "ray",
        "image": image,
        "env": [
            {"name": "WBC_RAY_MODELS", "value": "/models"},
            {"name": "WBC_RAY_RESULTS", "value": "/results"},
        ],
        "volumeMounts": [
            {"name": "models", "mountPath": "/models"},
            {"name": "results", "mountPath": "/results"},
        ],
    }
    volumes = [
        {"name": "models", "persistentVolumeClaim": {"claimName": "wbc-ray-models"}},
        {"name": "results", "persistentVolumeClaim": {"claimName": "wbc-ray-results"}},
    ]
    doc = {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": "wbc-ray"},
        "spec": {
            "serveConfigV2": yaml.safe_dump({"applications": serve["applications"]}, sort_keys=False),
            "rayClusterConfig": {
                "rayVersion": "2.60.0",
                "enableInTreeAutoscaling": True,
                "headGroupSpec": {
                    "rayStartParams": {"num-cpus": "0"},
                    "template": {
                        "spec": {
                            "containers": [
                                {**container, "resources": {"limits": {"cpu": "4", "memory": "16Gi"}}}
                            ],
                            "volumes": volumes,
                        }
                    },
                },
                "workerGroupSpecs": [
                    {
                        "groupName": "gpu",
                        "replicas": gpu_workers,
                        "minReplicas": gpu_workers,
                        "maxReplicas": 8,
                        "rayStartParams": {},
                        "template": {
                            "spec": {
                                "containers": [
                                    {
                                        **container,
                                        "resources": {
                                            "limits": {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "1"}
                                        },
                                    }
                                ],
                                "volumes": volumes,
                            }
                        },
                    }
                ],
            },
        },
    }
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False)


if __name__ == "__main__":
    cfg = Path(sys.argv[1] if len(sys.argv) > 1 else "configs/serve.gpu.yaml")
    sys.stdout.write(render(cfg))
