"""The schema is the service, accounts off (as `wbc-ray serve` starts by default): Schemathesis
with every check finds nothing, and the schema asks for no token the service does not need.
(Accounts on: tests/serve/test_service.py.)"""

from __future__ import annotations

import shutil

from tests.serve.conftest import run_schemathesis


def test_the_schema_without_accounts_asks_for_no_token(api) -> None:
    schema = api.get("/openapi.json").json()
    assert "securitySchemes" not in schema.get("components", {})
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            assert "security" not in op and "401" not in op["responses"], f"{method} {path}"
            if "422" in op["responses"]:  # this service's one error shape, not FastAPI's list
                body = op["responses"]["422"]["content"]["application/json"]["schema"]
                assert body == {"$ref": "#/components/schemas/Error"}, f"{method} {path}"
    assert "Accounts are off" in schema["info"]["description"]
    assert api.get("/docs").status_code == 200


def test_schemathesis_all_checks_without_accounts(server, slide_dir, composed) -> None:
    slide = slide_dir / "schema.tiff"
    shutil.copy2(composed, slide)
    run_schemathesis(server, slide)
