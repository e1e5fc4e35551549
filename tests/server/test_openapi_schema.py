"""Schemathesis against a running server's ``/openapi.json``: generated requests to every
operation, with a valid owner token, never get a 5xx, and every answer matches the schema
(documented status, media type, body — errors in the one error shape).

Bounded for CI: a fixed, derandomised handful of examples per operation (about 30 s in all).
Set ``TETHER_FUZZ_EXAMPLES=200`` to explore with fresh random examples.
"""

from __future__ import annotations

import os
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.failures import FailureGroup
from tests.support.api import bearer, dispatch, mint_token
from tests.support.server import ServerProcess

_EXPLORE = int(os.environ.get("TETHER_FUZZ_EXAMPLES", "0"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def owner(server: ServerProcess) -> str:
    return mint_token(server.data_dir)


@pytest.fixture(scope="module")
def api_schema(server: ServerProcess) -> Any:
    loaded = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    loaded.config.update(base_url=server.url)
    return loaded


FUZZ = settings(max_examples=_EXPLORE or 6, derandomize=not _EXPLORE, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def real_ids(server: ServerProcess, owner: str) -> dict[str, str]:
    """Ids that exist, so generated requests also get past the 404s into auth and bodies."""
    with httpx.Client(base_url=server.url, timeout=15) as client:
        d = dispatch(client, owner)
        spare = client.post("/v1/tokens", json={"name": "spare"}, headers=bearer(owner)).json()["id"]
        upload = client.post("/v1/files", files={"file": ("a.txt", b"hello")}, headers=bearer(owner)).json()
    return {"session_id": d.session_id, "env_id": d.environment_id, "work_id": d.work["id"], "token_id": spare,
            "file_uuid": upload["file_uuid"]}


@pytest.mark.timeout(300)
def test_api_answers_match_the_schema(api_schema: Any, owner: str, real_ids: dict[str, str]) -> None:
    """Every operation, with generated path parameters and then with real ones, one after the
    other (schemathesis' own pytest plug-in does not run on this pytest); all failures are
    collected and reported together."""
    failures: list[str] = []
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) > 40, "the schema lost its operations"
    for operation in operations:
        names = {p.name for p in operation.path_parameters}
        real = {name: value for name, value in real_ids.items() if name in names}
        for strategy in (operation.as_strategy(), operation.as_strategy(path_parameters=real)):

            @FUZZ
            @given(case=strategy)
            def run(case: Any) -> None:
                case.call_and_validate(headers=bearer(owner), checks=CHECKS, timeout=15)

            try:
                run()
            except (Exception, FailureGroup) as exc:  # failed checks: collect them and go on
                failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
            if not real:
                break
    assert not failures, "\n\n".join(failures)


def test_schema_documents_the_error_shape(api_schema: Any, server: ServerProcess) -> None:
    doc = httpx.get(f"{server.url}/openapi.json", timeout=15).json()
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    for path, operations in doc["paths"].items():
        assert not path.startswith(("/code", "/login", "/device", "/settings", "/static")), path
        for op in operations.values():
            assert "422" not in op["responses"]
            assert op["responses"]["401"]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/Error"}
