"""The Serve application: `serve run configs/serve.yaml` imports `build_app` from here."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict
from ray.serve import Application

from ..config import APP_NAME, CONFIG_DIR, Settings, load_settings
from ..errors import InvalidInput, MissingInput, SetupError
from ._ingress import Ingress, IngressSettings
from ._models import CNN, Ensemble
from ._requests import release_app_name

SERVE_CONFIG = CONFIG_DIR / "serve.yaml"
SERVE_GPU_CONFIG = CONFIG_DIR / "serve.gpu.yaml"


class AppArgs(BaseModel):
    """The Serve app's arguments (`args:` of a Serve config); unset ones come from the settings."""

    model_config = ConfigDict(extra="forbid")

    settings: str | None = None  # settings YAML (`wbc-ray --config`; default $WBC_RAY_CONFIG, default.yaml)
    models_dir: str | None = None  # default: settings (WBC_RAY_MODELS)
    results_dir: str | None = None  # default: settings (WBC_RAY_RESULTS)
    models: list[str] | None = None  # default: every checkpoint in models_dir
    fusion: str | None = None  # default: the settings' ensemble.fusion
    # One for all, or per model: None is the device default (AMP on GPUs; on CPUs bf16 where it
    # is native, else fp32). What pays on a CPU depends on the chip and the architecture:
    # measure with benchmarks/inference.py.
    precision: str | dict[str, str] | None = None
    torch_threads: int | dict[str, int] = 1  # per CNN replica (or per model); replicas run side by side
    # Threads a CNN replica may take for a step while its node's cores idle (the other models are
    # done, or slack mid-slide); 0 never. Off by default: a wide step sums in another order, so a
    # tile's score may move in the last bits and a rerun or resumed job is no longer identical
    # to the first, bit for bit. About 20 % faster end to end on 2 cores in int8 (docs/performance.md).
    tail_threads: int = 0
    max_batch_tiles: int = 256  # Serve batch cap per CNN replica, counted in tiles
    slide_roots: list[str] | None = None  # folders path submissions may read (plus uploads)
    max_upload_mb: float = 2048
    app_name: str = APP_NAME
    # Per-deployment options when the app is built from Python (serve run applies them itself).
    deployment_options: dict[str, dict[str, Any]] = {}

    def precision_of(self, name: str) -> str | None:
        """The precision this config sets for `name`, or None (the device default)."""
        return self.precision.get(name) if isinstance(self.precision, dict) else self.precision

    def precisions(self, names: list[str]) -> dict[str, str]:
        """{model: precision} for the named models this config sets a precision for."""
        return {n: p for n in names if (p := self.precision_of(n))}

    def threads_of(self, name: str) -> int:
        """Torch threads of `name`'s replicas."""
        t = self.torch_threads
        return t.get(name, 1) if isinstance(t, dict) else t


def _ensemble(a: AppArgs, s: Settings, models_dir: str) -> Any:
    """The CNN deployments and the Ensemble over them, for the release in `models_dir`."""
    from ..models import available
    from ..pipeline import AnalysisSettings

    names = a.models or available(models_dir)
    if not names:
        raise MissingInput(
            f"no model checkpoints in {models_dir}; the release is in weights/ (WBC_RAY_MODELS, --models)"
        )
    opts = a.deployment_options

    def cnn(name: str) -> Any:
        d = CNN.options(name=name, **opts.get(name, {}))  # type: ignore[attr-defined]
        return d.bind(
            models_dir, name, a.precision_of(name), a.threads_of(name), a.max_batch_tiles, a.tail_threads
        )

    ensemble_dep = Ensemble.options(**opts.get("Ensemble", {}))  # type: ignore[attr-defined]
    fusion = AnalysisSettings.from_settings(s, fusion=a.fusion).fusion
    return ensemble_dep.bind(fusion, models_dir, a.max_batch_tiles, **{n: cnn(n) for n in names})


def build_app(args: dict[str, Any] | None = None) -> Application:
    """The Serve application (CNN deployments, Ensemble, Ingress) from a Serve config's args."""
    from ..pipeline import AnalysisSettings

    a = AppArgs(**(args or {}))
    s = load_settings(a.settings)
    models_dir = str(Path(a.models_dir or s.models_dir).resolve())
    results_dir = str(Path(a.results_dir or s.results_dir).resolve())
    ensemble = _ensemble(a, s, models_dir)
    ingress = IngressSettings(
        results_dir=results_dir,
        slide_roots=a.slide_roots if a.slide_roots is not None else [str(s.data_dir), results_dir],
        max_upload_mb=a.max_upload_mb,
        analysis=AnalysisSettings.from_settings(s, fusion=a.fusion),
        service=s.service,
        app_name=a.app_name,
    )
    opts = a.deployment_options.get("Ingress", {})
    return Ingress.options(**opts).bind(ensemble, ingress)  # type: ignore[attr-defined]


def build_release_app(args: dict[str, Any] | None = None) -> Application:
    """A lab's release served beside the main one (`service.releases`): its CNN deployments and
    Ensemble as an application of their own, named `release_app_name(app_name, release)`, with no
    HTTP route; the main app's Ingress sends that release's jobs to it. `models_dir` is the
    release's folder.
    """
    a = AppArgs(**(args or {}))
    s = load_settings(a.settings)
    if not a.models_dir:
        raise InvalidInput("a release application needs models_dir: the release's folder")
    return _ensemble(a, s, str(Path(a.models_dir).resolve()))  # type: ignore[no-any-return]


def load_serve_config(path: str | os.PathLike[str] = SERVE_CONFIG) -> dict[str, Any]:
    """The wbc-ray application's entry of a Serve config file."""
    cfg = yaml.safe_load(Path(path).read_text())
    apps = [app for app in cfg.get("applications", []) if app.get("name") == APP_NAME]
    if not apps:
        raise InvalidInput(f"{path}: no application named {APP_NAME!r}")
    return {"config": cfg, "app": apps[0]}


def config_args(path: str | os.PathLike[str] | None = None) -> AppArgs:
    """The app's args as configured in a Serve config (default: `default_serve_config()`)."""
    return AppArgs(**load_serve_config(path or default_serve_config())["app"].get("args", {}))


def configured_precisions(
    path: str | os.PathLike[str] | None = None, names: list[str] | None = None
) -> dict[str, str]:
    """{model: precision} a Serve config (default: `default_serve_config()`) asks for, for the named
    models (default: every registered architecture): what calibration and evaluation of the
    served models must request. What each model then runs in (int8 only where an int8 model exists)
    is `lifecycle.served_precisions`.
    """
    from ..models import list_models

    return config_args(path).precisions(names if names is not None else list_models())


def app_from_config(
    path: str | os.PathLike[str] = SERVE_CONFIG, builder: Any = None, **overrides: Any
) -> Application:  # noqa: D401
    """Build the app as `serve run` would: args and per-deployment options from the YAML
    (`builder`: `build_release_app` for a lab's release with the same deployment options).
    """
    app = load_serve_config(path)["app"]
    args = {**app.get("args", {}), **overrides}
    opts = {}
    for d in app.get("deployments", []):
        d = dict(d)
        opts[d.pop("name")] = d
    args["deployment_options"] = {**opts, **args.get("deployment_options", {})}
    return (builder or build_app)(args)


def start(
    path: str | os.PathLike[str] | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    blocking: bool = False,
    **overrides: Any,
) -> Any:
    """Start local Ray (if needed) and the app; return the Ingress handle."""
    from ray import serve

    from ..pipeline import init_ray

    settings = load_settings(overrides.get("settings"))
    check_exposure(host, settings.service.auth)
    init_ray()
    serve.start(http_options={"host": host, "port": port})
    config = path or default_serve_config()
    # Labs' releases first: the Ingress may send a job to one as soon as it answers.
    app_name = overrides.get("app_name", APP_NAME)
    for release, folder in settings.service.releases.items():
        extra = {**overrides, "models_dir": str(folder)}
        serve.run(
            app_from_config(config, build_release_app, **extra),
            name=release_app_name(app_name, release),
            route_prefix=None,
        )
    return serve.run(app_from_config(config, **overrides), name=app_name, route_prefix="/", blocking=blocking)


LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def preflight(path: str | os.PathLike[str] | None, host: str, port: int, **overrides: Any) -> None:
    """What `wbc-ray serve` checks before Ray starts, so that an operator's mistake is one line
    saying what to do, not a replica's traceback: the Serve config's app arguments, the release
    and the labs' releases, the results folder and its database, and the port.
    """
    import socket

    from pydantic import ValidationError

    from ..models import available
    from ..release import is_release, verify_release
    from ._db import ServiceDB

    s = load_settings(overrides.get("settings"))
    check_exposure(host, s.service.auth)
    cfg = Path(path) if path else default_serve_config()
    try:
        args = AppArgs(**{**load_serve_config(cfg)["app"].get("args", {}), **overrides})
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidInput(f"Serve config {cfg}: cannot read it ({exc})") from None
    except ValidationError as exc:
        bad = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3])
        raise InvalidInput(f"Serve config {cfg}: application args: {bad}") from None
    models = Path(args.models_dir or s.models_dir)
    if is_release(models):
        verify_release(models)  # names the missing or altered file
    elif not available(models):
        raise MissingInput(f"no model checkpoints in {models}: point --models or WBC_RAY_MODELS at a release")
    for name, folder in s.service.releases.items():
        if not is_release(folder):
            raise MissingInput(
                f"service.releases.{name}: {folder} is not a release (no release.json): give a folder "
                "`wbc-ray adapt --out` wrote"
            )
        verify_release(folder)
    results = Path(args.results_dir or s.results_dir)
    try:
        results.mkdir(parents=True, exist_ok=True)
        probe = results / ".wbc-ray-write-check"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise SetupError(
            f"results folder {results} is not writable ({exc.strerror}): choose another with --results "
            "or WBC_RAY_RESULTS, or give this user write access"
        ) from None
    ServiceDB(results / "service.db")  # opens, migrates, or refuses a newer one
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise SetupError(
                f"port {port} on {host} is not free ({exc.strerror}): another service (a running "
                "`wbc-ray serve`?) holds it; stop it or choose --port"
            ) from None


def check_exposure(host: str, auth: bool) -> None:
    """Refuse to serve beyond this machine without accounts."""
    if host not in LOOPBACK and not auth:
        raise InvalidInput(
            f"refusing to serve on {host} without accounts: anyone who reaches it could read every "
            "slide's results. Turn them on (settings `service: {auth: true}` or WBC_RAY_AUTH=1), "
            "create tokens with `wbc-ray token create --user NAME --role submit`, or bind 127.0.0.1"
        )


def default_serve_config() -> Path:
    """configs/serve.gpu.yaml where there are GPUs (in the Ray cluster this process is connected
    to; without Ray, on this machine), else configs/serve.yaml. CPU replicas would leave the GPUs
    idle and GPU replicas could never start without them; and calibration and `evaluate --served`
    must measure the precisions the app will serve in (int8 on CPUs, AMP on GPUs).
    """
    import ray

    if ray.is_initialized():
        gpus = ray.cluster_resources().get("GPU", 0) > 0
    else:
        import torch

        gpus = torch.cuda.is_available()
    return SERVE_GPU_CONFIG if gpus else SERVE_CONFIG


def ensemble_handle() -> Any:
    """A handle on the running app's Ensemble deployment."""
    from ray import serve

    return serve.get_deployment_handle("Ensemble", app_name=APP_NAME)
