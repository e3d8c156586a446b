"""Batch analysis of slides, one Zarr store each: in this process (the local engine), or through a
Serve app (a running `wbc-ray serve`, a cluster's, or one started here).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import Settings, load_settings
from .ensemble import VERDICT_MEANING
from .errors import InvalidInput
from .slides import SlideError


@dataclass
class SlideResult:
    """One slide's outcome: its store and result record, or the error that stopped it."""

    slide: str
    store: str | None = None
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the slide was analysed."""
        return self.error is None

    def summary(self) -> dict[str, Any]:
        """The verdict, fraction, interval and paths, as `wbc-ray analyze --json` prints them."""
        r = self.result
        return {
            "slide": self.slide,
            "verdict": r.get("verdict"),
            "malignant_fraction": r.get("malignant_fraction"),
            "interval": r.get("interval"),
            "n_tiles": r.get("n_tiles"),
            "n_rejected": r.get("n_rejected"),
            "out_of_range_share": r.get("out_of_range_share"),
            "result": self.store,
            **({"error": self.error} if self.error else {}),
        }


def _safe_stem(path: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(path).name)[:80].strip("._") or "slide"
    return stem


class _Output:
    """The results folder: local, or a URI (s3://bucket/prefix, through fsspec)."""

    def __init__(self, where: str | os.PathLike[str]) -> None:
        self.where = os.fspath(where)
        self.remote = "://" in self.where
        if self.remote:
            from .slides import check_uri

            check_uri(self.where)  # no credentials inside the URI
        else:
            Path(self.where).mkdir(parents=True, exist_ok=True)

    def join(self, name: str) -> str:
        return f"{self.where.rstrip('/')}/{name}" if self.remote else str(Path(self.where) / name)

    def write(self, name: str, data: bytes) -> None:
        if not self.remote:
            Path(self.join(name)).write_bytes(data)
            return
        import fsspec

        with fsspec.open(self.join(name), "wb") as fh:
            fh.write(data)


def ensure_app(
    models_dir: str, results_dir: str, fusion: str | None = None, serve_config: str | None = None
) -> None:
    """Start local Ray and the Serve app unless an app of that name is already running
    (`serve_config` default: the GPU config where the cluster has GPUs, else configs/serve.yaml).
    """
    from ray import serve

    from .pipeline import init_ray
    from .serve import APP_NAME, start

    init_ray()  # a no-op where the caller joined a cluster already
    try:
        running = APP_NAME in serve.status().applications
    except Exception:
        running = False
    if not running:
        overrides: dict[str, Any] = {"models_dir": models_dir, "results_dir": results_dir}
        if fusion:
            overrides["fusion"] = fusion
        start(serve_config, **overrides)


def _check_same_models(cards: list[dict[str, Any]], models_dir: str) -> None:
    """Refuse to analyse with a running app whose models are not `models_dir`'s: the app is not
    restarted under a service that may be serving others; the caller says what to do.
    """
    differ = []
    for c in cards:
        card = Path(models_dir) / f"{c['name']}.json"
        try:
            version = json.loads(card.read_text()).get("version")
        except (OSError, ValueError):
            version = None
        if version != c["version"]:
            differ.append(f"{c['name']} {c['version']} (asked: {version or 'none'})")
    if differ:
        raise InvalidInput(
            f"the running wbc-ray app serves other models than {models_dir}: {', '.join(differ)}; "
            "analyse with the app's models, or stop it first (`serve shutdown`, or stop `wbc-ray serve`)"
        )


# How `analyze` scores: "local" in this process (the networks loaded here, slides read by
# threads); "ray" through a Serve app (a cluster's at RAY_ADDRESS, or one started here) with the
# slides streamed by Ray Data; "auto" picks ray where a cluster is named or this process is on one
# already, "serve" where a `wbc-ray serve` with the same models runs on this machine (its app
# scores, this process reads the slides by threads: no Ray Data workers to start for one slide),
# else local.
ENGINES = ("auto", "local", "serve", "ray")


@dataclass
class _Scoring:
    """What the slides are scored by: the engine chosen, its cards, tile rates and domain record."""

    engine: str
    cards: list[dict[str, Any]]
    rates_record: dict[str, Any] | None
    domain_record: dict[str, Any] | None
    scorer: Any = None  # the local ensemble; None: the Serve app
    startup_s: float = 0.0


def _process_age() -> float:
    """Seconds since this process started (its imports included)."""
    import psutil

    return time.time() - psutil.Process().create_time()


def _choose_engine(
    engine: str, models: str, serve_config: str | None, progress: bool
) -> tuple[str, str | None]:
    """(the engine, the Ray address to join or None) for `engine`, saying what auto found."""
    if engine not in ENGINES:
        raise InvalidInput(f"engine must be one of {ENGINES}, got {engine!r}")
    if engine in ("local", "ray"):
        return engine, None
    ray = sys.modules.get("ray")
    # A cluster named, or this process on one already (a notebook or test that started the app).
    if engine == "auto" and (os.environ.get("RAY_ADDRESS") or (ray is not None and ray.is_initialized())):
        return "ray", None
    from .service_record import record_path, running_service

    found = running_service()
    if found is None and engine == "serve":
        raise InvalidInput(f"no running `wbc-ray serve` on this machine (no live record at {record_path()})")
    if found is None:
        return "local", None
    from .serve_config import config_args

    wanted = sorted(config_args(serve_config).models or []) or None
    if Path(found["models_dir"]) != Path(models).resolve() or found.get("models") != wanted:
        if engine == "serve":
            raise InvalidInput(
                f"the running wbc-ray serve ({found['url']}) serves {found['models_dir']} "
                f"({', '.join(found.get('models') or ['every model'])}), not what this analysis asks for"
            )
        if progress:
            print(
                f"note: the running wbc-ray serve ({found['url']}) serves other models "
                f"({found['models_dir']}, {', '.join(found.get('models') or ['every model'])}); "
                "analysing in this process instead",
                file=sys.stderr,
            )
        return "local", None
    print(
        f"using the running wbc-ray serve (pid {found['pid']}, {found['url']}): its models are up "
        "already (`--engine local` scores in this process instead)",
        file=sys.stderr,
    )
    # Join in the cluster's auth mode: with token auth (Ray's default for a new local cluster)
    # a driver that does not ask for it is refused; Ray reads the token from its own file.
    os.environ.setdefault("RAY_AUTH_MODE", str(found.get("ray_auth_mode") or "disabled"))
    return "serve", str(found["ray_address"])


def _scoring(
    engine: str, models: str, results_dir: str, fusion: str, serve_config: str | None, progress: bool
) -> _Scoring:
    t0 = time.perf_counter()
    chosen, address = _choose_engine(engine, models, serve_config, progress)
    if chosen == "local":
        from .local import LocalEnsemble
        from .serve_config import config_args

        local = LocalEnsemble(models, config_args(serve_config), fusion)
        cards = local.models()
        for note in local.notes:
            print(f"note: {note}", file=sys.stderr)
        return _Scoring("local", cards, local.tile_rates(), local.domain(), local, time.perf_counter() - t0)
    from .pipeline import init_ray
    from .serve import ensemble_handle

    init_ray(address)
    ensure_app(models, results_dir, fusion, serve_config)
    cards = ensemble_handle().models.remote().result()
    _check_same_models(cards, models)
    rates_record = ensemble_handle().tile_rates.remote().result()
    domain_record = ensemble_handle().domain.remote().result()
    return _Scoring(chosen, cards, rates_record, domain_record, None, time.perf_counter() - t0)


def analyze_slides(
    slides: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str] = "results",
    *,
    models_dir: str | os.PathLike[str] | None = None,
    settings: Settings | None = None,
    fusion: str | None = None,
    slide_mpp: float | None = None,
    stain: str | None = None,
    progress: bool = True,
    serve_config: str | None = None,
    engine: str = "auto",
) -> list[SlideResult]:
    """Analyse whole slides with the released models: tiles, three CNNs, fused verdict.

    On one machine with nothing running, the networks are loaded in this process and the slides
    read by threads (no Ray to start: the fastest and lightest one-off path); where a
    `wbc-ray serve` runs on this machine with the same models, its app scores the tiles; where
    ``RAY_ADDRESS`` names a cluster, the slides go through Ray Data to its Serve app (started
    there when it is not running). The CLI's ``analyze`` is this function.

    Parameters
    ----------
    slides : list of path
        Slide files (SVS, TIFF, DICOM and the other formats OpenSlide opens; PNG/JPEG images).
    out_dir : path or URI, default "results"
        One ``<slide>.zarr`` store, ``<slide>.json`` result and ``<slide>.heatmap.png`` per slide.
    models_dir : path, optional
        Default: the settings' ``models_dir`` (``$WBC_RAY_MODELS``, else the release in ``weights/``).
    settings : Settings, optional
        Default: ``load_settings()`` (``configs/default.yaml`` and the environment).
    fusion : {"fuzzy_rank", "mean", "vote"}, optional
        Default: the settings' ``ensemble.fusion``.
    slide_mpp : float, optional
        The slides' microns per pixel where their files do not say (or say it wrong).
    stain : {"release", "none", "macenko", "reinhard"}, optional
        Stain normalisation; default: the settings' ``domain.stain``.
    progress : bool, default True
        A progress bar per slide.
    serve_config : path, optional
        The Serve config whose app arguments (models, precision, threads) apply: to the app when
        one is started, to the networks loaded here on the local engine.
    engine : {"auto", "local", "serve", "ray"}, default "auto"
        ``local``: the networks in this process; ``serve``: the running ``wbc-ray serve`` on this
        machine scores, this process reads the slides; ``ray``: Ray Data and a Serve app (the
        cluster's at ``RAY_ADDRESS``, or a local Ray and app started here); ``auto``: ``ray`` where
        ``RAY_ADDRESS`` is set or this process is on a Ray cluster already, ``serve`` where a
        ``wbc-ray serve`` with the same models runs here (saying so), else ``local``.

    Returns
    -------
    list of SlideResult
        In the order given. ``result["verdict"]`` is one of ``VERDICT_MEANING``'s keys,
        ``result["malignant_fraction"]`` and ``result["interval"]`` the estimate; a slide that
        could not be read has ``error`` set instead, and the others still run.
    """
    from .domain import DomainFile
    from .lifecycle import rates_for
    from .pipeline import AnalysisSettings, analyze_slide, screen_settings
    from .store import heatmap_png

    s = settings or load_settings()
    models = str(models_dir or s.models_dir)
    out = _Output(str(out_dir))
    cfg = AnalysisSettings.from_settings(
        s, fusion=fusion, slide_mpp=slide_mpp, screen=screen_settings(s, stain)
    )
    # The app's own job records stay on a local folder; a URI out_dir holds this run's results.
    results_dir = str(s.results_dir) if out.remote else str(out_dir)
    scoring = _scoring(engine, models, results_dir, cfg.fusion, serve_config, progress)
    domain = DomainFile.from_dict(scoring.domain_record) if scoring.domain_record else None
    if domain is None and progress and s.domain.check:
        print(
            "note: the release has no domain.json: tiles are quality-controlled but not checked "
            "against the training images (`wbc-ray domain` fits it)",
            file=sys.stderr,
        )
    rates = rates_for(scoring.rates_record, cfg.fusion)
    if rates is None and progress:
        measured = (scoring.rates_record or {}).get("fusions", {}).get(cfg.fusion)
        why = (
            f"the tile rates measured for fusion {cfg.fusion} separate the classes too little to "
            f"correct with (tpr {measured['tpr']:.2f}, fpr {measured['fpr']:.2f})"
            if measured
            else f"no tile rates measured for these models and fusion {cfg.fusion}"
        )
        print(
            f"note: {why}: reporting the raw share of malignant tiles (`wbc-ray calibrate` measures "
            "them for the current weights)",
            file=sys.stderr,
        )
    results: list[SlideResult] = []
    seen: dict[str, int] = {}
    for slide in map(str, slides):
        stem = _safe_stem(slide)
        seen[stem] = seen.get(stem, 0) + 1
        if seen[stem] > 1:
            stem = f"{stem}-{seen[stem]}"
        store = out.join(f"{stem}.zarr")
        try:
            r = analyze_slide(
                slide,
                store,
                scoring.cards,
                cfg,
                progress=progress,
                rates=rates,
                domain=domain,
                scorer=scoring.scorer,
                stream="ray" if scoring.engine == "ray" else "threads",
                score_threads=1 if scoring.engine == "local" else None,
            )
        except (SlideError, FileExistsError, ValueError) as exc:
            results.append(SlideResult(slide=slide, error=str(exc)))
            continue
        # Which engine scored it, and what starting it cost (models loaded, or Ray and the app
        # up): the benchmark's timeline reads them.
        r["timings"].update(
            engine=scoring.engine,
            startup_s=round(scoring.startup_s, 3),
            process_s=round(_process_age(), 3),
        )
        out.write(f"{stem}.json", json.dumps(r, indent=2).encode())
        out.write(f"{stem}.heatmap.png", heatmap_png(store))
        results.append(SlideResult(slide=slide, store=store, result=r))
    return results


def print_summary(results: list[SlideResult]) -> None:
    """One row per slide; `raw` is the share of malignant tiles before the adjusted count."""
    head = (
        f"{'slide':<36} {'verdict':<14} {'fraction':>8} {'95% interval':>16} {'raw':>6} {'tiles':>7} "
        f"{'QC rej.':>7} {'out of range':>12}"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        name = os.path.basename(r.slide)[:36]
        if not r.ok:
            print(f"{name:<36} {'ERROR':<14} {r.error}")
            continue
        lo, hi = r.result["interval"]
        raw = r.result.get("raw_fraction")
        raw_s = "-" if raw is None else f"{raw:.3f}"
        far = r.result.get("out_of_range_share")
        far_s = "-" if far is None else f"{100 * far:.1f} %"
        print(
            f"{name:<36} {r.result['verdict']:<14} {r.result['malignant_fraction']:>8.3f} "
            f"{f'[{lo:.3f}, {hi:.3f}]':>16} {raw_s:>6} {r.result['n_tiles']:>7} "
            f"{r.result.get('n_rejected', 0):>7} {far_s:>12}"
        )
    for verdict in sorted({r.result["verdict"] for r in results if r.ok} & {"out_of_scope", "insufficient"}):
        print(f"\n{verdict}: {VERDICT_MEANING[verdict]}")
    where = results[0].store.rsplit("/", 1)[0] if results and results[0].store else "-"
    print(f"\nresults in {where}")
