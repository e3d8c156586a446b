"""The service's FastAPI app object, before any route: its error shape and handlers, and the
response declarations the routes share (the Ingress and its route groups register on it).
"""
# No `from __future__ import annotations`: FastAPI resolves annotations at run time.

import os
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer
from pydantic import BaseModel

from ..config import VERSION
from ..slides import SlideError

api = FastAPI(
    title="wbc-ray",
    description="Whole-slide screening for acute lymphoblastic leukemia: three CNNs on Ray Serve "
    "fused by a fuzzy rank ensemble into a slide verdict. With auth on, every route but /health and "
    "/viewer takes a bearer token (`wbc-ray token create`).",
    version=VERSION,
    # Served by the Ingress itself (`openapi_json`, `docs`): the schema depends on its settings.
    openapi_url=None,
    docs_url=None,
    redoc_url=None,
)
bearer = HTTPBearer(auto_error=False, description="a token from `wbc-ray token create`")


class Error(BaseModel):
    """Every error answer: what went wrong, naming the input."""

    detail: str


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {
        400: "malformed request",
        401: "no or unknown token",
        403: "not allowed for this token, or outside the slide folders",
        404: "no such job (or not yours), tile or model",
        409: "the job has not finished",
        410: "the job's slide can no longer be read",
        413: "too large",
        422: "invalid input",
        429: "the queue is full; retry after the seconds in Retry-After",
        507: "not enough free disk for the upload",
    }
    return {c: {"model": Error, "description": text[c]} for c in codes}


def binary_response(media: str) -> dict[int | str, dict[str, Any]]:
    return {
        200: {"content": {media: {"schema": {"type": "string", "format": "binary"}}}, "description": "OK"}
    }


# Registered before the class: `serve.ingress` takes the app as it is at that point.
@api.middleware("http")
async def _allow_header(request: Request, call_next: Any) -> Any:
    # A path with several routes (GET and POST /jobs; GET and DELETE /jobs/{id}) answers 405 from
    # whichever route matched first, naming only its methods; name all the path has. Read from the
    # app's own schema: in a replica the routes sit inside Serve's included router, whose shape is
    # FastAPI's private business.
    response = await call_next(request)
    if response.status_code == 405:
        paths = request.app.openapi()["paths"]
        # A literal path wins over a template it also matches (/jobs/upload is not /jobs/{job_id}).
        matching = (
            [request.url.path]
            if request.url.path in paths
            else [
                template
                for template in paths
                if re.fullmatch(re.sub(r"\{[^/}]+\}", "[^/]+", template), request.url.path)
            ]
        )
        methods = {
            method.upper() for template in matching for method in paths[template] if method in _HTTP_METHODS
        }
        response.headers["Allow"] = ", ".join(sorted(methods))
    return response


_HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


@api.exception_handler(SlideError)
async def _slide_errors(_: Request, exc: SlideError) -> JSONResponse:
    return JSONResponse({"detail": f"{os.path.basename(exc.path)[:120]}: {exc.reason}"}, status_code=422)


@api.exception_handler(RequestValidationError)
async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
    # One shape for every error answer ({"detail": "..."}), as the schema says.
    parts = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in exc.errors()[:5]]
    return JSONResponse({"detail": "; ".join(parts) or "invalid request"}, status_code=422)
