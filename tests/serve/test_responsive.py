"""The service stays responsive while it serves heavy downloads: exports, heatmaps and Grad-CAMs
run in threads, never on the Ingress' event loop (one replica serves every route)."""

from __future__ import annotations

import threading

import httpx

from tests.serve.conftest import submit, wait_done


def test_health_answers_while_exports_of_a_large_slide_are_in_flight(
    api, server, slide_dir, test_items
) -> None:
    from wbc_ray.slides import compose_slide

    slide = slide_dir / "large.tiff"
    compose_slide(test_items, slide, grid=(40, 40), malignant_fraction=0.2, seed=31)
    job = submit(api, slide)
    assert wait_done(api, job)["status"] == "done"
    n_tiles = api.get(f"/jobs/{job}/result").json()["n_tiles"]
    assert n_tiles >= 1200

    # Four downloads at once (the whole slide's GeoJSON twice, its CSV, its heatmap); meanwhile
    # /health, one call after the other. Were any download run on the event loop, no other request
    # could be answered while it ran: a handful at most would slip in between the downloads.
    finished: list[tuple[str, int, int]] = []
    answered = 0

    def pull(route: str) -> None:
        with httpx.Client(base_url=server, timeout=300) as c:
            r = c.get(f"/jobs/{job}/{route}")
            finished.append((route, r.status_code, len(r.content)))

    pullers = [
        threading.Thread(target=pull, args=(route,))
        for route in ("geojson", "tiles.csv", "heatmap.png", "geojson")
    ]
    for t in pullers:
        t.start()
    with httpx.Client(base_url=server, timeout=60) as c:
        while len(finished) < len(pullers):
            r = c.get("/health")
            assert r.status_code == 200 and r.json()["status"] == "ok"
            if len(finished) < len(pullers):  # answered while a download was still running
                answered += 1
    for t in pullers:
        t.join()
    assert all(code == 200 and size > 1000 for _, code, size in finished), finished
    geojson = [size for route, _, size in finished if route == "geojson"]
    assert len(geojson) == 2 and geojson[0] == geojson[1]
    assert answered >= 10, f"/health answered {answered} times while {len(pullers)} downloads ran"


def test_text_downloads_come_gzipped_when_asked_with_an_etag(api, mixed_slide) -> None:
    job = submit(api, mixed_slide)
    assert wait_done(api, job)["status"] == "done"
    for route in ("geojson", "tiles.csv"):
        plain = api.get(f"/jobs/{job}/{route}", headers={"Accept-Encoding": "identity"})
        zipped = api.get(f"/jobs/{job}/{route}", headers={"Accept-Encoding": "gzip"})
        assert plain.status_code == zipped.status_code == 200
        assert "content-encoding" not in plain.headers and zipped.headers["content-encoding"] == "gzip"
        assert zipped.content == plain.content  # httpx decodes: the same document
        assert int(zipped.headers["content-length"]) * 3 < len(plain.content)
        assert plain.headers["etag"] and plain.headers["etag"] != zipped.headers["etag"]
        assert zipped.headers["vary"] == "Accept-Encoding"
    png = api.get(f"/jobs/{job}/heatmap.png", headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in png.headers and png.content[:4] == b"\x89PNG"
