"""Typed settings, loaded from `configs/*.yaml` and overridable from the CLI and environment."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .ensemble import DEFAULT_CONFIDENCE, DEFAULT_FUSION, DEFAULT_TAU, Fusion
from .errors import InvalidInput, MissingInput
from .scale import FIELD_PX, TRAINING_MPP

# The release a service is started with, as submissions name it; and what other names may be.
MAIN_RELEASE = "main"
RELEASE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")

PACKAGE_DIR = Path(__file__).resolve().parent
# The settings and Serve configs ship inside the package (`configs/` in a checkout links here),
# so a plain `pip install .` finds them.
CONFIG_DIR = PACKAGE_DIR / "configs"
# A source checkout holds the release (weights/) and the default results folder; an installed
# package has none beside it, and those defaults fall back to the working folder.
REPO_ROOT = PACKAGE_DIR.parent if (PACKAGE_DIR.parent / "pyproject.toml").is_file() else Path.cwd()
APP_NAME = "wbc-ray"  # the Serve application's name, and the distribution's


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(APP_NAME)
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "0+unknown"


VERSION = _version()


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SlideSettings(_Strict):
    """How slides are opened."""

    # Used only when a slide carries no resolution; None means such slides are refused.
    default_mpp: float | None = None
    thumbnail_px: int = Field(2048, ge=64)


class TilingSettings(_Strict):
    """The tile grid and the Ray Data job of `wbc-ray tile`."""

    tile_px: int = Field(FIELD_PX, ge=8)
    mpp: float = Field(TRAINING_MPP, gt=0)
    stride_px: int | None = None
    min_tissue: float = Field(0.25, ge=0, le=1)
    # Tiles with less tissue than this (strips of mostly empty glass at a smear's edge) are scored
    # and drawn, but not counted in the slide's share: a tile a third on cells would count benign.
    min_tissue_counted: float = Field(0.5, ge=0, le=1)
    chunk_tiles: int = Field(64, ge=1)  # tiles per work unit = per Zarr chunk (tiling jobs)
    store_pixels: bool = True
    read_cpus: float = Field(0.5, gt=0)  # fractional, so readers never starve other stages


class EnsembleSettings(_Strict):
    """Fusion of the three CNNs' answers and the slide verdict."""

    fusion: Fusion = DEFAULT_FUSION
    tau: float = Field(DEFAULT_TAU, gt=0, lt=1)
    confidence: float = Field(DEFAULT_CONFIDENCE, gt=0, lt=1)
    tile_threshold: float = Field(0.5, gt=0, lt=1)


class AnalysisRunSettings(_Strict):
    """The scoring job of an analysis."""

    # A scoring job stores no pixels, so its unit of work can be large: each unit is one request
    # to the ensemble and one to each CNN, and Ray's cost per request is fixed (docs/performance.md
    # has the measurements behind 256).
    chunk_tiles: int = Field(256, ge=1)  # tiles per work unit, per ensemble request, per Zarr chunk
    score_tasks: int = Field(4, ge=1)  # work units in flight to the ensemble


class QcSettings(_Strict):
    """Tile quality control before scoring (thresholds set on the training images: 1 of 1,913
    fails them; docs/domain.md).
    """

    enabled: bool = True
    min_content: float = Field(0.08, ge=0, le=1)  # share of stained or coloured pixels; below: background
    min_sharpness: float = -3.9  # log mean |Laplacian| of a block's content; half the tile below: blur
    max_ink: float = Field(0.15, ge=0, le=1)  # share of pen-coloured pixels; above: ink
    max_debris: float = Field(0.05, ge=0, le=1)  # share of near-black pixels; above: debris
    # A slide with fewer usable tiles than this, or a smaller share of its tissue tiles usable,
    # gets the verdict "insufficient".
    min_usable_tiles: int = Field(20, ge=1)
    min_usable_share: float = Field(0.25, ge=0, le=1)


class DomainSettings(_Strict):
    """The domain check and stain normalisation (their statistics come from the release)."""

    check: bool = True
    # Share of usable tiles outside the release's domain above which a slide is "out_of_scope".
    max_out_of_range: float = Field(0.3, ge=0, le=1)
    # none | macenko | reinhard, or "release": the method the release's measurements chose.
    stain: Literal["release", "none", "macenko", "reinhard"] = "release"


class ServiceSettings(_Strict):
    """The REST service: accounts, the job queue, disk and audit."""

    # Bearer tokens (`wbc-ray token create`) on every route but /health and the review workspace's
    # page (no data: its script sends the token). Off only on 127.0.0.1: `wbc-ray serve --host`
    # elsewhere refuses to start without it.
    auth: bool = False
    max_running: int = Field(1, ge=1)  # slides analysed at once (more gain nothing on 2 cores)
    max_queued: int = Field(20, ge=0)  # waiting slides; beyond, 429 with Retry-After
    max_queued_per_user: int | None = Field(None, ge=1)  # queued + running per user
    min_free_gb: float = Field(2.0, ge=0)  # uploads refused (507) below this much free disk
    audit_log: bool = True  # <results_dir>/audit.log, JSON lines
    max_score_files: int = Field(64, ge=1)  # patches per POST /score; beyond: 413
    max_score_mb: float = Field(16.0, gt=0)  # bytes per patch of POST /score; beyond: 413
    # Labs' releases (`wbc-ray adapt`) served beside the main one, each its own Serve application:
    # name -> release folder. A submission names one (`release`); none: the main release.
    releases: dict[str, Path] = {}

    @field_validator("releases")
    @classmethod
    def _release_names(cls, v: dict[str, Path]) -> dict[str, Path]:
        for name in v:
            if not RELEASE_NAME.fullmatch(name) or name == MAIN_RELEASE:
                raise ValueError(
                    f"release name {name!r}: 1-32 lower-case letters, digits, - or _, not {MAIN_RELEASE!r}"
                )
        return v


class Settings(_Strict):
    """All settings: folders, slides, tiling, ensemble, analysis (`configs/default.yaml`)."""

    data_dir: Path = REPO_ROOT.parent / "shared" / "data"
    models_dir: Path = REPO_ROOT / "weights"
    results_dir: Path = REPO_ROOT / "results"
    slides: SlideSettings = SlideSettings()
    tiling: TilingSettings = TilingSettings()
    ensemble: EnsembleSettings = EnsembleSettings()
    analysis: AnalysisRunSettings = AnalysisRunSettings()
    service: ServiceSettings = ServiceSettings()
    qc: QcSettings = QcSettings()
    domain: DomainSettings = DomainSettings()


# Every default, as written once in the classes above: what library code defaults to.
DEFAULTS = Settings()


ENV_PATHS = {"WBC_RAY_DATA": "data_dir", "WBC_RAY_MODELS": "models_dir", "WBC_RAY_RESULTS": "results_dir"}
# Settings a container or an operator turns on from the environment (WBC_RAY_AUTH=1).
ENV_FLAGS = {"WBC_RAY_AUTH": ("service", "auth")}


def load_settings(path: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Defaults < YAML file (`path`, else $WBC_RAY_CONFIG, else configs/default.yaml) < environment
    variables < explicit overrides.
    """
    raw: dict[str, Any] = {}
    path = path or os.environ.get("WBC_RAY_CONFIG") or None
    cfg = Path(path) if path else CONFIG_DIR / "default.yaml"
    if path and not cfg.is_file():
        raise MissingInput(f"settings file {cfg} does not exist")
    if cfg.exists():
        try:
            raw = yaml.safe_load(cfg.read_text()) or {}
        except yaml.YAMLError as exc:
            raise InvalidInput(f"settings file {cfg} is not valid YAML: {exc}") from None
        if not isinstance(raw, dict):
            raise InvalidInput(f"settings file {cfg} must hold a mapping, not {type(raw).__name__}")
    for env, key in ENV_PATHS.items():
        if os.environ.get(env):
            raw[key] = os.environ[env]
    for env, (section, name) in ENV_FLAGS.items():
        if os.environ.get(env):
            raw.setdefault(section, {})[name] = os.environ[env].lower() in {"1", "true", "yes", "on"}
    for key, value in overrides.items():
        section, _, name = key.partition(".")
        if name:
            raw.setdefault(section, {})[name] = value
        else:
            raw[key] = value
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        where = f"settings ({cfg})" if cfg.exists() else "settings"
        raise InvalidInput(f"{where}: {exc}") from None
