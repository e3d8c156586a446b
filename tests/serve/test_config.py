"""configs/serve*.yaml are valid Ray Serve configs, and the KubeRay manifest embeds them verbatim."""

from __future__ import annotations

import pytest
import yaml

from wbc_ray.config import REPO_ROOT


@pytest.mark.parametrize("name", ["serve.yaml", "serve.gpu.yaml"])
def test_serve_configs_validate(name: str) -> None:
    from ray.serve.schema import ServeDeploySchema

    raw = yaml.safe_load((REPO_ROOT / "configs" / name).read_text())
    cfg = (
        ServeDeploySchema.model_validate(raw)
        if hasattr(ServeDeploySchema, "model_validate")
        else ServeDeploySchema.parse_obj(raw)
    )
    app = cfg.applications[0]
    assert app.import_path == "wbc_ray.serve.app:build_app"
    names = {d.name for d in app.deployments}
    assert names == {"mobilenet", "xception", "inception_v3", "Ensemble", "Ingress"}
    from wbc_ray.serve import AppArgs

    AppArgs(**app.args)  # the args the builder will get are ones it accepts
    cnn = [d for d in app.deployments if d.name in {"mobilenet", "xception", "inception_v3"}]
    if name == "serve.yaml":
        # Fractional CPUs that leave room for the Ray Data read tasks on 2 cores.
        total = sum(d.ray_actor_options.num_cpus * d.num_replicas for d in app.deployments)
        assert total <= 1.1
    else:
        assert all((d.ray_actor_options.num_gpus or 0) > 0 and d.autoscaling_config for d in cnn)
        # The first replica of every model must fit on one GPU together, or a one-GPU node
        # (the cluster configs' GPU workers) leaves a model pending forever.
        first = sum(d.ray_actor_options.num_gpus * d.autoscaling_config["min_replicas"] for d in cnn)
        assert first <= 1.0
