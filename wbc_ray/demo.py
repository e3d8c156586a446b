"""`make demo`: compose a labelled slide from held-out images and analyse it end to end."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from .config import load_settings
from .errors import ReleaseError


def main() -> int:
    """Compose a slide from held-out test images, analyse it, print verdict against truth."""
    from .analyze import analyze_slides, print_summary
    from .lifecycle import ensure_tile_rates, served_precisions
    from .manifest import read_manifest
    from .models import available
    from .release import is_release, verify_release
    from .serve.app import configured_precisions
    from .slides import GridSpec, compose_slide, grid_preview, open_slide, tile_grid, tissue_mask

    s = load_settings()
    manifest = s.data_dir / "all_taleqani" / "split.csv"
    if not manifest.exists():
        print(f"demo: no data at {manifest}; set WBC_RAY_DATA to the shared data folder", file=sys.stderr)
        return 2
    out = Path(s.results_dir) / "demo"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)

    models = Path(s.models_dir)
    try:
        names = available(models)  # a release is checked file by file here; damage is named
    except (ReleaseError, FileNotFoundError) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2
    if not names:
        print(f"demo: no models in {models} (WBC_RAY_MODELS); the release is in weights/", file=sys.stderr)
        return 2
    what = f"release {verify_release(models).version}" if is_release(models) else "checkpoints"
    # The slide estimate's tile rates, for the calls the app will make: a release ships them for
    # fp32 and bf16; int8 (configs/serve.yaml on CPUs) once `wbc-ray quantize` built it here.
    precision = configured_precisions()
    served = served_precisions(models, precision)
    print(f"demo: {what} in {models}: {', '.join(f'{n} ({served[n]})' for n in names)}", flush=True)
    if any(precision.get(n) == "int8" and not served[n].startswith("int8") for n in names):
        print(
            "      int8 is not built on this machine yet, so this runs the default precision;\n"
            "      `.venv/bin/wbc-ray quantize` builds it once (a few minutes) for faster CPU serving",
            flush=True,
        )
    ensure_tile_rates(models, manifest, precision)

    slide = out / "demo_slide.tiff"
    truth = compose_slide(
        read_manifest(manifest, "test"), slide, grid=(16, 16), malignant_fraction=0.3, seed=42, progress=True
    )
    with open_slide(slide) as sl:
        mask = tissue_mask(sl)
        grid_preview(sl, mask, tile_grid(sl, mask, GridSpec(tile_px=224, mpp=0.5))).save(
            out / "grid_preview.png"
        )
    results = analyze_slides([str(slide)], models_dir=str(models), out_dir=str(out), settings=s)
    print()
    print_summary(results)
    r = results[0]
    if not r.ok:
        return 1
    stem = Path(r.store or "").stem
    print(
        f"\ntruth   {truth['slide_label']}, malignant fraction {truth['malignant_fraction']:.3f} "
        f"({slide.with_suffix('.json')})\n"
        f"result  {out / (stem + '.json')}\n"
        f"heatmap {out / (stem + '.heatmap.png')}  (fused malignant score over the thumbnail)\n"
        f"grid    {out / 'grid_preview.png'}  (tissue mask and tiles)\n"
        f"store   {r.store}  (Zarr: coords, tissue, probs, fused, qc, domain, heatmap)\n"
        f"browser `.venv/bin/wbc-ray serve &` then `.venv/bin/wbc-ray ui`, and submit {slide}\n"
        f"        (verdict, heatmap, each model's Grad-CAM on the most suspicious tiles)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
