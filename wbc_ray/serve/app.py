"""The Serve application: `serve run configs/serve.yaml` imports `build_app` from here."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from ray.serve import Application

from ..config import APP_NAME, Settings, load_settings
from ..errors import InvalidInput, MissingInput, SetupError
from ..serve_config import (  # noqa: F401  (re-exported: the app's own names)
    SERVE_CONFIG,
    SERVE_GPU_CONFIG,
    AppArgs,
    config_args,
    default_serve_config,
    load_serve_config,
)
from ._ingress import Ingress, IngressSettings
from ._models import CNN, Ensemble
from ._requests import release_app_name


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


def ensemble_handle() -> Any:
    """A handle on the running app's Ensemble deployment."""
    from ray import serve

    return serve.get_deployment_handle("Ensemble", app_name=APP_NAME)
