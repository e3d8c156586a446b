"""`make demo`: compose a labelled slide from held-out images and run it through the pipeline."""

from __future__ import annotations

import sys
from pathlib import Path

from .config import load_settings


def main() -> int:
    from .manifest import read_manifest
    from .pipeline import plan_slide, run_job
    from .slides import GridSpec, compose_slide, grid_preview, open_slide, tile_grid, tissue_mask

    s = load_settings()
    manifest = s.data_dir / "all_taleqani" / "split.csv"
    if not manifest.exists():
        print(f"demo: no data at {manifest}; set WBC_RAY_DATA to the shared data folder", file=sys.stderr)
        return 2
    out = Path(s.results_dir) / "demo"
    out.mkdir(parents=True, exist_ok=True)
    slide = out / "demo_slide.tiff"
    truth = compose_slide(
        read_manifest(manifest, "test"), slide, grid=(12, 16), malignant_fraction=0.3, seed=42, progress=True
    )
    spec = GridSpec(tile_px=s.tiling.tile_px, mpp=s.tiling.mpp, min_tissue=s.tiling.min_tissue)
    with open_slide(slide) as sl:
        mask = tissue_mask(sl)
        grid_preview(sl, mask, tile_grid(sl, mask, spec)).save(out / "grid_preview.png")
    store = out / "demo_tiles.zarr"
    if store.exists():
        import shutil

        shutil.rmtree(store)
    res = run_job(plan_slide(slide, spec), store, chunk_tiles=s.tiling.chunk_tiles)
    print(
        f"\nslide   {slide}  ({truth['width']}x{truth['height']} px, truth: {truth['slide_label']}, "
        f"malignant fraction {truth['malignant_fraction']:.2f})\n"
        f"grid    {out / 'grid_preview.png'}  (tissue mask and kept tiles over the thumbnail)\n"
        f"tiles   {store}  ({res.n_tiles} tiles, {res.tiles_per_s:.0f} tiles/s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
