"""The OpenAPI document (servers/openapi.py): complete, served, and true of a real server.

schemathesis generates requests from the document (valid and invalid ones) against real
``wirewise serve`` processes, on uvicorn and on hypercorn (over HTTP/1.1: schemathesis
speaks it), with a valid token, and checks that no answer is a 5xx and that every answer
matches what the document declares (status, content type, body schema). The SSE stream and
the WebSocket upgrade are left out: one never ends, the other is not plain HTTP.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.routing import Route, WebSocketRoute

from tests.servers import ServerProcess, start
from wirewise.servers import openapi
from wirewise.servers.app import build_app

SETTINGS = (
    "--set",
    "longpoll_max_wait=0.2",  # generated `wait` values must not hold the run
    "--set",
    "send_rate=100000",
    "--set",
    "send_burst=100000",
)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]

schema = schemathesis.openapi.from_dict(openapi.schema()).exclude(path_regex="/(stream|ws)$")


def test_every_route_is_in_the_schema() -> None:
    app = build_app()
    routes = app.app.routes  # type: ignore[attr-defined]
    paths = openapi.schema()["paths"]
    served = set()
    for route in routes:
        assert isinstance(route, (Route, WebSocketRoute))
        methods = {"GET"} if isinstance(route, WebSocketRoute) else route.methods - {"HEAD"}
        assert route.path in paths, f"{route.path} is not in the OpenAPI document"
        assert {m.lower() for m in methods} <= set(paths[route.path]), route.path
        served.add(route.path)
    assert served == set(paths), "the document lists only routes the application serves"


@pytest.fixture(scope="module", params=["sse", "h2"], ids=["uvicorn", "hypercorn"])
def live(request: pytest.FixtureRequest) -> Iterator[tuple[ServerProcess, str]]:
    server = start(request.param, *SETTINGS)
    try:
        with httpx.Client(http1=True, http2=False) as http:
            token = http.post(f"{server.url}/login", json={"user": "fuzz"}).json()["token"]
            assert http.get(f"{server.url}/openapi.json").json() == openapi.schema()
        yield server, token
    finally:
        server.stop()


@schema.parametrize()
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_the_server_keeps_to_its_schema(
    case: schemathesis.Case, live: tuple[ServerProcess, str]
) -> None:
    server, token = live
    headers = {"Authorization": f"Bearer {token}"}  # wins over generated credentials
    case.call_and_validate(base_url=server.url, headers=headers, checks=CHECKS, timeout=5)
