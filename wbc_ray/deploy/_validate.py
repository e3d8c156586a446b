"""Offline validation of KubeRay resources against the CRDs' `openAPIV3Schema`.

No API server is at hand, so the check is the schema itself, made as strict as the API server's
strict field validation: an object whose schema lists its properties accepts no others (unless
the schema says `x-kubernetes-preserve-unknown-fields`), so a misspelt field fails here.
"""

from __future__ import annotations

import copy
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from ..errors import InvalidInput, MissingInput

CRD_FILES = {"RayService": "ray.io_rayservices.yaml", "RayCluster": "ray.io_rayclusters.yaml"}


class ResourceError(InvalidInput):
    """A resource does not validate against its CRD; the message lists each failure by path."""


def _strict(schema: Any) -> Any:
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        if out.get("x-kubernetes-int-or-string"):
            out.pop("type", None)
            out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@lru_cache(maxsize=4)
def _crd(path: str) -> dict[str, Any]:
    return dict(yaml.safe_load(Path(path).read_text()))


def crd_schema(kind: str, crd_dir: str | Path, version: str = "v1") -> dict[str, Any]:
    """The strict JSON schema of `kind` (RayService, RayCluster) at `version` from a CRD folder."""
    if kind not in CRD_FILES:
        raise InvalidInput(f"no CRD for kind {kind!r}; known: {sorted(CRD_FILES)}")
    path = Path(crd_dir) / CRD_FILES[kind]
    if not path.is_file():
        raise MissingInput(f"KubeRay CRD {path} not found (pass the folder holding {CRD_FILES[kind]})")
    for v in _crd(str(path))["spec"]["versions"]:
        if v["name"] == version:
            return dict(_strict(copy.deepcopy(v["schema"]["openAPIV3Schema"])))
    raise InvalidInput(f"{path} has no version {version!r}")


def validate_resource(doc: dict[str, Any], crd_dir: str | Path) -> None:
    """Raise `ResourceError` listing every way `doc` breaks its CRD's schema, else return."""
    import jsonschema

    api = str(doc.get("apiVersion", ""))
    if not api.startswith("ray.io/"):
        raise ResourceError(f"apiVersion {api!r} is not a KubeRay one (ray.io/...)")
    schema = crd_schema(str(doc.get("kind")), crd_dir, api.split("/", 1)[1])
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(doc), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"{'.'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}" for e in errors[:20]]
        raise ResourceError(
            f"{doc.get('kind')} {doc.get('metadata', {}).get('name')!r}:\n" + "\n".join(lines)
        )
    # The embedded Serve config is a string to the CRD; check it parses and names our app.
    if doc["kind"] == "RayService":
        serve = yaml.safe_load(doc["spec"]["serveConfigV2"])
        if not any(
            a.get("import_path") == "wbc_ray.serve.app:build_app" for a in serve.get("applications", [])
        ):
            raise ResourceError("serveConfigV2 has no application importing wbc_ray.serve.app:build_app")
