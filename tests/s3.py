"""moto's S3 server for the tests that put outputs to object storage (fixtures `s3_endpoint`
and `s3`, registered for the whole suite by tests/conftest.py; moto and boto3 are imported
only by a test that uses them)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

# Dummy credentials: the server is moto on 127.0.0.1; nothing leaves the machine.
SECRET = "dummy-secret-never-shown"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A `ThreadedMotoServer` on a free port of 127.0.0.1, for one test module."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(s3_endpoint: str) -> Any:
    """A boto3 client of the moto server (to inspect a bucket independently of s3fs)."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id="dummy",
        aws_secret_access_key=SECRET,
        region_name="us-east-1",
    )
