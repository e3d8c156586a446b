"""The CLI package: one module per verb, each with its flags beside its handler."""

from __future__ import annotations

import subprocess
import sys

from wbc_ray.cli import build_parser
from wbc_ray.cli._main import VERBS


def test_every_verb_is_a_module_with_flags_and_a_handler() -> None:
    names = [v.NAME for v in VERBS]
    assert len(set(names)) == len(names) >= 11
    parser = build_parser()
    for verb in VERBS:
        assert callable(verb.add_arguments) and callable(verb.run) and verb.HELP
        assert verb.__name__.split(".")[-1] == verb.NAME.replace("-", "_")
    args = parser.parse_args(["tile", "s.svs", "--out", "o.zarr"])
    # Unset flags stay None, so the settings' values apply (not a second copy of them here).
    assert args.run is VERBS[names.index("tile")].run and args.tile_px is None and args.mpp is None
    args = parser.parse_args(["train", "--model", "mobilenet"])
    assert args.batch_size is None and args.lr is None and args.precision is None


def test_unset_train_flags_leave_trainconfig_defaults() -> None:
    from wbc_ray.cli._shared import given
    from wbc_ray.cli.train import FIELDS
    from wbc_ray.training import TrainConfig

    args = build_parser().parse_args(["train", "--model", "mobilenet", "--seed", "3"])
    cfg = TrainConfig(model="mobilenet", manifest="m.csv", out="o", **given(args, *FIELDS))  # type: ignore[arg-type]
    default = TrainConfig(model="mobilenet", manifest="m.csv", out="o")
    assert cfg.seed == 3 and cfg.batch_size == default.batch_size and cfg.lr == default.lr


def _tile_with(config, out):  # type: ignore[no-untyped-def]
    return subprocess.run(
        [sys.executable, "-m", "wbc_ray.cli", "--config", str(config), "tile", "x.svs", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_bad_settings_file_is_a_user_error_naming_it(tmp_path) -> None:
    bad = tmp_path / "settings.yaml"
    bad.write_text("tiling:\n  tile_px: -3\n")
    r = _tile_with(bad, tmp_path / "o")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert str(bad) in r.stderr and "tile_px" in r.stderr
    bad.write_text("tiling: [unclosed\n")
    r = _tile_with(bad, tmp_path / "o")
    assert r.returncode == 2 and "not valid YAML" in r.stderr, r.stderr
