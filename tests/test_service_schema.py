"""Property-based pass over our OpenAPI schema: no generated request may produce a 5xx.

Bounded (a few examples per operation) and in-process (ASGI, loopback only), so it stays fast.
"""

import tempfile

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from engine.service.app import create_app
from engine.service.core import EngineService
from tests.service_support import CLIENT_HEADERS, StandInPipeline

_SERVICE = EngineService(StandInPipeline(steps=1), tempfile.mkdtemp(prefix="ace-schema-"),
                         max_upload_bytes=100_000, log=lambda line: None)
# schemathesis addresses the app as "testserver"; a real engine answers only to its own names
schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(_SERVICE, allow_hosts=["testserver"]))


@pytest.fixture(scope="module", autouse=True)
def _worker():
    _SERVICE.start()
    yield
    _SERVICE.stop()


@schema.parametrize()
@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_gives_a_server_error(case):
    response = case.call(headers=CLIENT_HEADERS)
    assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.status_code} {response.text}"
