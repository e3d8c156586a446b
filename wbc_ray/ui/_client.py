"""The REST API as the UI sees it: a small typed HTTP client (the UI never imports Ray)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import httpx

from ..errors import WbcRayError


class ApiError(WbcRayError, RuntimeError):
    """The API answered with an error; `str()` is its own message (`detail`), for people."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


@dataclass(frozen=True)
class Explanation:
    png: bytes
    explained_class: str
    p_malignant: float
    has_evidence: bool


class ApiClient:
    def __init__(self, base_url: str, timeout: float = 120.0, token: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, headers=headers)

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            r = self._http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise ApiError(503, f"the wbc-ray API at {self.base_url} cannot be reached: {exc}") from None
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail", r.text)
            except ValueError:
                detail = r.text
            raise ApiError(r.status_code, str(detail))
        return r

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/health").json()

    def models(self) -> dict[str, Any]:
        return self._call("GET", "/models").json()

    def submit_upload(
        self,
        path: str | os.PathLike[str],
        fusion: str | None = None,
        stain: str | None = None,
        release: str | None = None,
    ) -> str:
        params = {k: v for k, v in (("fusion", fusion), ("stain", stain), ("release", release)) if v}
        with open(path, "rb") as fh:
            files = {"file": (os.path.basename(path), fh, "application/octet-stream")}
            return self._call("POST", "/jobs/upload", files=files, params=params).json()["job_id"]

    def submit_path(
        self, path: str, fusion: str | None = None, stain: str | None = None, release: str | None = None
    ) -> str:
        body: dict[str, Any] = {
            "path": path,
            **{k: v for k, v in (("fusion", fusion), ("stain", stain), ("release", release)) if v},
        }
        return self._call("POST", "/jobs", json=body).json()["job_id"]

    def jobs(self) -> list[dict[str, Any]]:
        return self._call("GET", "/jobs").json()

    def status(self, job_id: str) -> dict[str, Any]:
        return self._call("GET", f"/jobs/{job_id}").json()

    def result(self, job_id: str) -> dict[str, Any]:
        return self._call("GET", f"/jobs/{job_id}/result").json()

    def queue(self, job_id: str, per_group: int = 10) -> list[dict[str, Any]]:
        """The job's review queue (most suspicious, most uncertain, out of range)."""
        return self._call("GET", f"/jobs/{job_id}/queue", params={"per_group": per_group}).json()["items"]

    def heatmap_png(self, job_id: str) -> bytes:
        return self._call("GET", f"/jobs/{job_id}/heatmap.png").content

    def download(self, job_id: str, what: str) -> bytes:
        """`what`: "tiles.csv" or "geojson"."""
        return self._call("GET", f"/jobs/{job_id}/{what}").content

    def gradcam(self, job_id: str, tile: int, model: str) -> Explanation:
        r = self._call("GET", f"/jobs/{job_id}/tiles/{tile}/gradcam.png", params={"model": model})
        return Explanation(
            png=r.content,
            explained_class=r.headers.get("X-Explained-Class", ""),
            p_malignant=float(r.headers.get("X-Model-Probability-Malignant", "nan")),
            has_evidence=r.headers.get("X-Evidence") != "none",
        )
