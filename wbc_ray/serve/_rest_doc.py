"""`python -m wbc_ray.serve._rest_doc OUT.md`: the REST reference page, from the app's OpenAPI schema."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any


def rest_markdown(schema: dict[str, Any]) -> str:
    lines = [
        f"# REST API ({schema['info']['title']} {schema['info']['version']})",
        "",
        "Generated from the service's OpenAPI schema (`GET /openapi.json`; interactive at `/docs`).",
        "",
    ]
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            lines += [f"## `{method.upper()} {path}`", "", op.get("summary", ""), ""]
            if op.get("description"):
                lines += [op["description"].strip(), ""]
            params = op.get("parameters", [])
            if params:
                lines += ["| parameter | in | required | type |", "| --- | --- | --- | --- |"]
                for p in params:
                    lines.append(f"| `{p['name']}` | {p['in']} | {p.get('required', False)} | {_type(p)} |")
                lines.append("")
            responses = op.get("responses", {})
            if responses:
                codes = ", ".join(f"{code} {r.get('description', '')}" for code, r in responses.items())
                lines += [f"Responses: {codes}", ""]
    return "\n".join(lines) + "\n"


def _type(param: dict[str, Any]) -> str:
    schema = param.get("schema", {})
    options = schema.get("anyOf", [schema])
    return " or ".join(str(o.get("type", "?")) for o in options)


def main() -> int:
    from ._ingress import api
    from ._schema import service_openapi

    # Documented as a lab runs it, with accounts (which adds the token and its 401s to each route).
    Path(sys.argv[1]).write_text(rest_markdown(service_openapi(api.openapi(), auth=True)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
