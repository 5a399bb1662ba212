"""schemathesis against the live OpenAPI document of a running coordinator (bounded examples)."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from conftest import ADMIN, PREFIX, hospital

MAX_EXAMPLES = 25


@pytest.mark.parametrize("token", ["admin", "organization", "none"])
def test_no_5xx_and_responses_conform(start_service, token: str) -> None:
    service = start_service()
    with service.client() as admin:
        created = admin.post(f"{PREFIX}/organizations", json=hospital("Hospital A")).json()
    headers = {"admin": {"Authorization": f"Bearer {ADMIN}"},
               "organization": {"Authorization": f"Bearer {created['api_key']}"}, "none": {}}[token]  # fmt: skip
    schema = schemathesis.openapi.from_url(service.base_url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {f"{PREFIX}/organizations", f"{PREFIX}/model", f"{PREFIX}/gradients"}
    checked = 0
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def run(case: schemathesis.Case) -> None:
            nonlocal checked
            if case.query:  # bounded examples: no long poll (a 30 s wait per example)
                case.query.pop("wait_seconds", None)
            response = case.call(base_url=service.base_url, headers=headers, timeout=30)
            case.validate_response(
                response,
                checks=[not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance],
            )
            checked += 1

        run()
    assert checked >= len(operations)
    with service.client() as admin:  # the service still answers and its state is coherent
        assert admin.get(f"{PREFIX}/model").status_code == 200
        assert all(o["organization_id"].startswith("org_") for o in admin.get(f"{PREFIX}/organizations").json())
