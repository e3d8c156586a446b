"""KubeRay resources: rendered from the Serve configs, committed as rendered, valid against the CRDs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from wbc_ray.config import REPO_ROOT
from wbc_ray.deploy import RESOURCES, ResourceError, render_all, validate_resource

CRDS = REPO_ROOT.parent / "shared" / "kuberay"


def need_crds() -> None:
    if not (CRDS / "ray.io_rayservices.yaml").is_file():
        pytest.skip(f"KubeRay CRDs not found in {CRDS} (the shared folder beside the checkout)")


def test_the_committed_resources_are_the_render() -> None:
    rendered = render_all()
    assert set(rendered) == set(RESOURCES)
    for name, text in rendered.items():
        committed = (REPO_ROOT / "deploy" / name).read_text()
        assert committed == text, f"deploy/{name} differs from `wbc-ray deploy render`: rerun it"


@pytest.mark.parametrize("name", sorted(RESOURCES))
def test_each_resource_validates_against_its_crd(name: str) -> None:
    need_crds()
    doc = yaml.safe_load((REPO_ROOT / "deploy" / name).read_text())
    validate_resource(doc, CRDS)
    kind, source, variant = RESOURCES[name]
    assert doc["kind"] == kind
    spec = doc["spec"] if kind == "RayCluster" else doc["spec"]["rayClusterConfig"]
    assert spec["enableInTreeAutoscaling"] is True
    (group,) = spec["workerGroupSpecs"]
    assert group["minReplicas"] < group["maxReplicas"]
    limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert ("nvidia.com/gpu" in limits) == (variant == "cuda")
    assert group["template"]["spec"]["containers"][0]["image"].endswith(f"-{variant}")
    if kind == "RayService":
        # The Serve config is embedded whole: its applications are the config file's.
        embedded = yaml.safe_load(doc["spec"]["serveConfigV2"])
        assert embedded["applications"] == yaml.safe_load((REPO_ROOT / source).read_text())["applications"]


def test_the_check_finds_misspelt_fields_and_wrong_types() -> None:
    need_crds()
    doc = yaml.safe_load(render_all()["rayservice.yaml"])
    doc["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParam"] = {}
    doc["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["maxReplicas"] = "eight"
    with pytest.raises(ResourceError) as err:
        validate_resource(doc, CRDS)
    assert "rayStartParam" in str(err.value) and "workerGroupSpecs.0.maxReplicas" in str(err.value)
    doc = yaml.safe_load(render_all()["rayservice.yaml"])
    doc["spec"]["serveConfigV2"] = "applications: []\n"
    with pytest.raises(ResourceError, match="wbc_ray.serve.app:build_app"):
        validate_resource(doc, CRDS)


def test_one_container_recipe_builds_both_variants() -> None:
    text = (REPO_ROOT / "deploy" / "Dockerfile").read_text()
    assert re.search(r"^ARG VARIANT=cpu$", text, re.M)
    stages = set(re.findall(r"^FROM \S+ AS base-(\w+)$", text, re.M))
    assert stages == {"cpu", "cuda"} and re.search(r"^FROM base-\$\{VARIANT\}$", text, re.M)
    # The CPU variant takes torch's CPU wheels, the CUDA one PyPI's; both at the project's pins.
    pins = re.findall(r"torch==[\d.]+ torchvision==[\d.]+", text)
    project = Path(REPO_ROOT / "pyproject.toml").read_text()
    assert pins and all(p.split()[0] in project and p.split()[1] in project for p in pins)
