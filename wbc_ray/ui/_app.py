"""The Gradio page: submit a slide, watch it run, read the verdict, look at the evidence.

Its own process, talking to the REST API over HTTP only (Ray's Gradio ingress does not work with
current Gradio, and a UI that restarts must not take the service down with it).
"""

from __future__ import annotations

import html
import io
import json
import os
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

from ..ensemble import FUSIONS
from ._client import ApiClient, ApiError
from ._views import (
    agreement,
    finished_jobs,
    interval_picture,
    model_names,
    progress_text,
    queue_choices,
    release_choices,
    slide_details,
    tile_rows,
    verdict_card,
)

POLL_S = 1.0


def _png(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def _explain(
    api: ApiClient, job_id: str, tile: int | None, names: list[str]
) -> list[tuple[Image.Image, str]]:
    if not job_id or tile is None:
        return []
    out = []
    for m in names:
        e = api.gradcam(job_id, int(tile), m)
        note = "" if e.has_evidence else " (no evidence for it)"
        out.append((_png(e.png), f"{m}: p(malignant) {e.p_malignant:.3f}; map for {e.explained_class}{note}"))
    return out


def _downloads(api: ApiClient, job_id: str, result: dict[str, Any], tiles_csv: bytes) -> list[str]:
    # One folder per job, rewritten whole file by file: reopening a job does not pile up copies.
    folder = Path(tempfile.gettempdir()) / "wbc-ray-ui" / job_id
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        f"{job_id}.result.json": json.dumps(result, indent=2).encode(),
        f"{job_id}.tiles.csv": tiles_csv,
        f"{job_id}.geojson": api.download(job_id, "geojson"),
    }
    for name, data in files.items():
        tmp = folder / f".{name}.{os.getpid()}"
        tmp.write_bytes(data)
        os.replace(tmp, folder / name)
    return [str(folder / n) for n in files]


class _Handlers:
    """The page's event handlers over one API client; each returns the outputs in `_Page.outputs`
    order.
    """

    def __init__(self, api_url: str, viewer_url: str | None = None) -> None:
        self.api_url = api_url
        # Where browsers reach the service (the review workspace is its page): the API's address
        # unless the page's visitors reach the service by another.
        self.viewer_url = (viewer_url or api_url).rstrip("/")
        self._clients: dict[str, ApiClient] = {}

    def client(self, token: str | None) -> ApiClient:
        """A client that sends this token (the page passes each visitor's own)."""
        key = (token or "").strip()
        if key not in self._clients:
            self._clients[key] = ApiClient(self.api_url, token=key or None)
        return self._clients[key]

    def shown(
        self, api: ApiClient, job_id: str, st: dict[str, Any], token: str = ""
    ) -> Iterator[tuple[Any, ...]]:
        """Everything the page shows for a finished job: the verdict at once, then the first
        tile's Grad-CAMs (seconds of the models' time) once they are made.
        """
        result = api.result(job_id)
        tiles_csv = api.download(job_id, "tiles.csv")
        rows = tile_rows(tiles_csv)
        choices = queue_choices(api.queue(job_id))
        first = choices[0][1] if choices else None
        out: tuple[Any, ...] = (
            f"{progress_text(st)} — job `{job_id}` · {slide_details(st)}",
            verdict_card(result),
            interval_picture(result),
            _png(api.heatmap_png(job_id)),
            agreement(rows, float(result["tile_threshold"])),
            gr.update(choices=choices, value=first),
            [],
            _downloads(api, job_id, result, tiles_csv),
            job_id,
            gr.update(choices=finished_jobs(api.jobs()), value=job_id),
            self.review_link(job_id, token),
        )
        yield out
        yield (*out[:6], _explain(api, job_id, first, model_names(rows)), *out[7:])

    def review_link(self, job_id: str, token: str) -> str:
        """The review workspace of a job (served by the service), in the page and in a tab of its
        own; the visitor's token goes in the fragment, which browsers never send to a server.
        """
        src = f"{self.viewer_url}/viewer?job={html.escape(job_id)}"
        if token.strip():
            src += "#token=" + urllib.parse.quote(token.strip(), safe="")
        return (
            f'<p><a href="{html.escape(src)}" target="_blank" rel="noopener">Open the review workspace '
            "in a tab of its own</a>: zoom to the cells, step through the review queue, agree or "
            "overturn each call, sign the slide off.</p>"
            f'<iframe src="{html.escape(src)}" title="review workspace" '
            'style="width:100%;height:760px;border:1px solid #ccc"></iframe>'
        )

    @staticmethod
    def message(text: str, job_id: str = "") -> tuple[Any, ...]:
        """The outputs with only the status line (and the job, if there is one) to show."""
        empty: tuple[Any, ...] = ("", None, None, None, gr.update(choices=[], value=None), [], None)
        return (text, *empty, job_id, gr.update(), "")

    def analyse(
        self,
        upload: str | None,
        path: str,
        fusion: str,
        token: str = "",
        stain: str = "",
        release: str = "",
    ) -> Iterator[tuple[Any, ...]]:
        """Submit a slide, then show its progress until it is done or failed."""
        api = self.client(token)
        # The last run's words go at once: a refusal must not stand over the next run.
        yield self.message("**Submitting** …")
        try:
            if upload:
                job_id = api.submit_upload(upload, fusion, stain, release)
            elif path.strip():
                job_id = api.submit_path(path.strip(), fusion, stain, release)
            else:
                yield self.message("**Choose a slide:** upload one or give its path on the server.")
                return
            yield self.message(f"**Submitted** as job `{job_id}`", job_id)
            while (st := api.status(job_id))["status"] not in {"done", "failed", "cancelled"}:
                yield self.message(progress_text(st), job_id)
                time.sleep(POLL_S)
            if st["status"] == "done":
                yield from self.shown(api, job_id, st, token)
            else:
                yield self.message(progress_text(st), job_id)
        except ApiError as exc:
            yield self.message(f"**Error ({exc.status}):** {exc}")

    def reopen(self, job_id: str | None, token: str = "") -> Iterator[tuple[Any, ...]]:
        """Show an earlier job again."""
        if not job_id:
            yield self.message("")
            return
        api = self.client(token)
        try:
            yield from self.shown(api, job_id, api.status(job_id), token)
        except ApiError as exc:
            yield self.message(f"**Error ({exc.status}):** {exc}")

    def releases(self, token: str = "") -> Any:
        """The releases the service holds (the main one and labs' adapted ones), for the picker."""
        try:
            held = self.client(token).models().get("releases") or {}
        except ApiError:
            return gr.update()
        return gr.update(choices=release_choices(held))

    def earlier(self, token: str = "") -> Any:
        """The finished jobs, for the picker."""
        try:
            return gr.update(choices=finished_jobs(self.client(token).jobs()))
        except ApiError:
            return gr.update(choices=[])

    def explain(self, job_id: str, tile: int | None, token: str = "") -> list[tuple[Image.Image, str]]:
        """Each model's Grad-CAM of one tile."""
        api = self.client(token)
        try:
            names = [m["name"] for m in api.models()["models"]]
            return _explain(api, job_id, tile, names)
        except ApiError as exc:
            raise gr.Error(str(exc)) from None


@dataclass
class _Page:
    """The page's components that handlers read or write."""

    job: Any
    token: Any
    jobs: Any
    upload: Any
    path: Any
    fusion: Any
    stain: Any
    release: Any
    run: Any
    status: Any
    downloads: Any
    verdict: Any
    interval: Any
    heatmap: Any
    agree: Any
    tile: Any
    cams: Any
    review: Any

    @property
    def outputs(self) -> list[Any]:
        return [
            self.status,
            self.verdict,
            self.interval,
            self.heatmap,
            self.agree,
            self.tile,
            self.cams,
            self.downloads,
            self.job,
            self.jobs,
            self.review,
        ]


def _layout() -> _Page:
    """Lay the page out (inside an open gr.Blocks): inputs left, results right, tiles below."""
    gr.Markdown(
        "# wbc-ray\nScreen a whole-slide scan of a blood or bone-marrow smear for acute "
        "lymphoblastic leukemia. Three CNNs score every tissue tile; their fused calls give "
        "the slide's malignant fraction, with an interval, against the threshold τ."
    )
    job = gr.State("")
    with gr.Row():
        with gr.Column(scale=1):
            token = gr.Textbox(
                label="Access token (where the service has accounts)", type="password", elem_id="token"
            )
            jobs = gr.Dropdown(label="Open an earlier analysis", choices=[], elem_id="jobs")
            upload = gr.File(
                label="Slide file (TIFF, SVS, NDPI, MRXS zip, ...)", type="filepath", elem_id="slide-file"
            )
            path = gr.Textbox(label="...or its path on the server", elem_id="slide-path")
            fusion = gr.Dropdown(list(FUSIONS), value=FUSIONS[0], label="Fusion")
            stain = gr.Dropdown(
                [("the service's setting", ""), "release", "none", "macenko", "reinhard"],
                value="",
                label="Stain normalisation (release: the release's measured choice)",
                elem_id="stain",
            )
            release = gr.Dropdown(
                [("main (the shipped release)", "main")],
                value="main",
                label="Models: the shipped release or a lab's adapted one",
                elem_id="release",
            )
            run = gr.Button("Analyse", variant="primary", elem_id="analyse")
            status = gr.Markdown(elem_id="status")
            downloads = gr.File(
                label="Downloads (result JSON, tile CSV, QuPath GeoJSON)",
                file_count="multiple",
                elem_id="downloads",
            )
        with gr.Column(scale=2):
            verdict = gr.Markdown(elem_id="verdict")
            interval = gr.Image(show_label=False, type="pil", elem_id="interval", height=120)
            heatmap = gr.Image(
                label="Fused malignant score per tile: blue 0 (benign), yellow 0.5, red 1 (malignant)",
                type="pil",
                elem_id="heatmap",
            )
            agree = gr.Dataframe(
                headers=["model", "malignant share", "agrees with fused"],
                label="Model agreement over the scored tiles",
                elem_id="agreement",
            )
    gr.Markdown("### Review the calls")
    review = gr.HTML(elem_id="review")
    gr.Markdown("### The review queue's tiles, with each model's Grad-CAM")
    tile = gr.Dropdown(
        label="Tile (most suspicious, then most uncertain, then out of the domain check's range)",
        choices=[],
        elem_id="tile",
    )
    cams = gr.Gallery(
        label="Grad-CAM per model: left the tile, right the model's evidence",
        columns=3,
        object_fit="contain",
        height="auto",
        elem_id="gradcam",
    )
    return _Page(
        job,
        token,
        jobs,
        upload,
        path,
        fusion,
        stain,
        release,
        run,
        status,
        downloads,
        verdict,
        interval,
        heatmap,
        agree,
        tile,
        cams,
        review,
    )


def build_ui(api_url: str, viewer_url: str | None = None) -> gr.Blocks:
    """The page over the REST API at `api_url` (which it reaches only through `ApiClient`);
    browsers reach the review workspace at `viewer_url` (default: `api_url`).
    """
    h = _Handlers(api_url, viewer_url)
    with gr.Blocks(title="wbc-ray: ALL screening") as ui:
        page = _layout()
        page.run.click(
            h.analyse,
            [page.upload, page.path, page.fusion, page.token, page.stain, page.release],
            page.outputs,
        )
        # `select`, not `input`: a Gradio dropdown also fires `input` when it loses focus, which
        # reopened the last job picked while a new analysis was starting.
        page.jobs.select(h.reopen, [page.jobs, page.token], page.outputs)
        page.tile.select(h.explain, [page.job, page.tile, page.token], page.cams)
        ui.load(h.earlier, None, page.jobs)
        ui.load(h.releases, None, page.release)
        page.token.change(h.earlier, page.token, page.jobs)
        page.token.change(h.releases, page.token, page.release)
    return ui


def launch(
    api_url: str,
    host: str = "127.0.0.1",
    port: int = 7860,
    block: bool = True,
    viewer_url: str | None = None,
) -> gr.Blocks:
    """Serve the page on `host:port` (this machine only by default)."""
    ui = build_ui(api_url, viewer_url)
    ui.queue().launch(server_name=host, server_port=port, prevent_thread_lock=not block, footer_links=[])
    return ui
