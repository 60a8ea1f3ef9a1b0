"""Property-based pass over our OpenAPI schema: no generated request may produce a 5xx, and every
answer (status code, content type, headers, body) is one the schema documents.

Bounded (a few examples per operation) and in-process (ASGI, loopback only), so it stays fast.
Not checked: whether every schema-valid request is accepted (an upload must also be real audio,
a model name must exist), which the schema cannot express.
"""

import tempfile

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from engine.service.app import create_app
from engine.service.core import EngineService
from simulators.pipelines import StandInPipeline
from tests.service_support import CLIENT_HEADERS

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
def test_answers_match_the_schema_and_none_is_a_server_error(case):
    case.call_and_validate(headers=CLIENT_HEADERS, checks=[
        not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
        response_schema_conformance])
