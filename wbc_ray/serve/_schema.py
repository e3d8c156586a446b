"""The OpenAPI schema as the running service behaves: one schema per accounts mode.

FastAPI derives the schema from the routes, and so declares what the route code cannot say by
itself wrongly: every route that takes the optional bearer dependency is declared to *require* a
token, even where the service runs without accounts and accepts requests with none; and every
validation error is declared as FastAPI's own list-shaped body while this service answers one
`{"detail": str}`. `service_openapi` corrects both from the settings the service runs with, so
a client generator, Schemathesis or a reader of `/docs` sees the service it talks to.
"""

from __future__ import annotations

import copy
from typing import Any

ERROR_REF = {"$ref": "#/components/schemas/Error"}
_FASTAPI_VALIDATION = ("HTTPValidationError", "ValidationError")

AUTH_ON = (
    "\n\nAccounts are on: every route but `/health` and the review workspace's page and files "
    "(`/viewer`: no data; its script sends the token) takes a bearer token (`wbc-ray token create`); "
    "without one it answers 401."
)
AUTH_OFF = (
    "\n\nAccounts are off (a service on 127.0.0.1 only): no route takes a token; "
    "every request acts as the local user, an administrator."
)


def service_openapi(base: dict[str, Any], *, auth: bool) -> dict[str, Any]:
    """`base` (FastAPI's schema of the app) as the service behaves with accounts on or off."""
    schema = copy.deepcopy(base)
    components = schema.setdefault("components", {})
    for ops in schema.get("paths", {}).values():
        for op in ops.values():
            responses = op.get("responses", {})
            if "422" in responses:
                responses["422"] = {
                    "description": "invalid input (the message names it)",
                    "content": {"application/json": {"schema": dict(ERROR_REF)}},
                }
            if not auth:
                op.pop("security", None)
                responses.pop("401", None)
    for name in _FASTAPI_VALIDATION:
        components.get("schemas", {}).pop(name, None)
    if not auth:
        components.pop("securitySchemes", None)
    info = schema.setdefault("info", {})
    info["description"] = info.get("description", "") + (AUTH_ON if auth else AUTH_OFF)
    return schema
