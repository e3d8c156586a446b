"""Opening slides (local or by URI), finding tissue, planning tile grids, composing test slides."""

from ._compose import FIELD_PX, GAP_PX, GLASS_RGB, compose_slide
from ._deepzoom import DeepZoomGrid, deepzoom_grid, read_deepzoom_tile
from ._error import SlideError
from ._fetch import check_uri, evict, fetch, is_uri, local_path
from ._grid import GridSpec, TileGrid, choose_level, tile_grid
from ._preview import grid_preview
from ._reader import Slide, SlideInfo, open_slide
from ._tiles import read_tile
from ._tissue import TissueMask, tissue_mask, tissue_mask_from_rgb

__all__ = [
    "DeepZoomGrid",
    "deepzoom_grid",
    "read_deepzoom_tile",
    "FIELD_PX",
    "GAP_PX",
    "GLASS_RGB",
    "GridSpec",
    "Slide",
    "SlideError",
    "SlideInfo",
    "TileGrid",
    "TissueMask",
    "choose_level",
    "check_uri",
    "compose_slide",
    "evict",
    "fetch",
    "is_uri",
    "local_path",
    "grid_preview",
    "open_slide",
    "read_tile",
    "tile_grid",
    "tissue_mask",
    "tissue_mask_from_rgb",
]
