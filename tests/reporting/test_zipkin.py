"""The Zipkin backend against a real HTTP endpoint that validates bodies with Zipkin's spec."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tests.encoding.conftest import finished_spans

import tomograph
from support.servers import REPO_ROOT, never_answering_server, require
from support.zipkin_server import RecordingZipkinServer, validate_list_of_spans
from tomograph import ConfigurationError, Tracer, config
from tomograph.encoding import zipkin_json
from tomograph.model import Endpoint
from tomograph.reporting.transport import EXIT_FLUSH_SECONDS
from tomograph.reporting.zipkin import ZipkinBackend

pytestmark = pytest.mark.integration


def _trace(tracer: Tracer) -> None:
    with tracer.span("checkout", kind="server", tags={"items": 3, "vip": True}) as root:
        root.annotate("validated")
        with tracer.span("charge", kind="client", remote_endpoint=Endpoint("bank", "10.0.0.9")):
            pass


@pytest.mark.parametrize("query", ["", "?encoding=proto", "?gzip=1", "?encoding=proto&gzip=true"])
def test_spans_arrive_valid_in_every_encoding(query: str) -> None:
    with RecordingZipkinServer() as server:
        url = f"zipkin+{server.url}{query}".replace("zipkin+http://", "zipkin+http://")
        backend = config.backend_from_url(url)
        tracer = Tracer("Shop", backends=[backend])
        _trace(tracer)
        assert backend.flush(5)
        spans = server.wait_for(2)
        backend.close(1)
    assert server.invalid == []
    by_name = {span["name"]: span for span in spans}
    assert by_name["charge"]["parentId"] == by_name["checkout"]["id"]
    assert by_name["checkout"]["tags"] == {"items": "3", "vip": "true"}
    assert by_name["checkout"]["annotations"][0]["value"] == "validated"
    assert by_name["charge"]["remoteEndpoint"] == {"serviceName": "bank", "ipv4": "10.0.0.9"}
    assert by_name["charge"]["localEndpoint"] == {"serviceName": "shop"}
    headers = server.requests[0]["headers"]
    assert headers["Content-Type"] == (
        "application/x-protobuf" if "proto" in query else "application/json"
    )
    assert ("gzip" in query) == (headers.get("Content-Encoding") == "gzip")


def test_spans_reach_zipkin_through_configure_and_stats_count_them() -> None:
    with RecordingZipkinServer() as server:
        tomograph.configure(
            service="web", backends=[f"zipkin+{server.url}?interval=0.05"], environ={}
        )
        try:
            for _ in range(5):
                with tomograph.span("request"):
                    pass
            assert tomograph.flush(5)
            stats = tomograph.stats()
        finally:
            config.reset()
        assert len(server.wait_for(5)) == 5
    assert (stats["queued"], stats["sent"], stats["dropped"], stats["failed"]) == (5, 5, 0, 0)
    assert stats["batches"] >= 1 and stats["bytes"] > 0
    (backend_stats,) = stats["backends"].values()
    assert backend_stats["sent"] == 5


def test_large_batches_are_split_to_fit_max_bytes() -> None:
    with RecordingZipkinServer() as server:
        backend = ZipkinBackend(server.url, max_bytes=2000, batch_size=500, interval=0.05)
        tracer = Tracer("svc", backends=[backend])
        for index in range(100):
            with tracer.span(f"operation number {index}"):
                pass
        assert backend.flush(5)
        assert len(server.wait_for(100)) == 100
        backend.close(1)
    assert len(server.requests) > 1
    assert all(request["size"] <= 2000 for request in server.requests)


def test_zipkin_over_https_verifies_the_certificate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    openssl = require("openssl", "to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    with RecordingZipkinServer(tls=(cert, key)) as server:
        untrusted = config.backend_from_url(f"zipkin+{server.url}?max_retries=0")
        Tracer("svc", backends=[untrusted]).start_span("op").finish()
        assert untrusted.flush(5)
        assert untrusted.stats()["failed"] == 1  # unknown CA: refused, counted, not raised
        untrusted.close(1)
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # how a private CA is trusted
        trusted = config.backend_from_url(f"zipkin+{server.url}")
        Tracer("svc", backends=[trusted]).start_span("op").finish()
        assert trusted.flush(5)
        assert trusted.stats()["sent"] == 1
        trusted.close(1)
        assert len(server.wait_for(1)) == 1


def test_connections_are_kept_alive_between_batches() -> None:
    with RecordingZipkinServer() as server:
        backend = ZipkinBackend(server.url, batch_size=10, interval=0.05)
        tracer = Tracer("svc", backends=[backend])
        for _ in range(5):
            for _ in range(10):
                with tracer.span("op"):
                    pass
            assert backend.flush(5)
        backend.close(1)
    assert len(server.requests) >= 5
    assert len({request["port"] for request in server.requests}) == 1


def test_a_kept_alive_connection_closed_by_the_server_is_reopened_without_a_retry() -> None:
    with RecordingZipkinServer() as server:
        server.faults.append(("close-after",))
        backend = ZipkinBackend(server.url, interval=0.05)
        tracer = Tracer("svc", backends=[backend])
        for _ in range(2):
            with tracer.span("op"):
                pass
            assert backend.flush(5)
        stats = backend.stats()
        backend.close(1)
    assert (stats["sent"], stats["retries"], stats["failed"]) == (2, 0, 0)
    assert len({request["port"] for request in server.requests}) == 2


EXIT_SCRIPT = """
import atexit, json, logging, sys, time

exit_began = []


def report():  # registered first, so it runs last: after tomograph's exit hooks
    stats = tomograph.stats()
    print(json.dumps({
        "exit_seconds": time.monotonic() - exit_began[0],
        "default": {key: stats[key] for key in tomograph.reporting.stats.COUNTERS},
        "other": dict(other_backend.stats()),
    }))


atexit.register(report)
logging.basicConfig(format="%(message)s")
import tomograph
import tomograph.reporting.stats
from tomograph.reporting.zipkin import ZipkinBackend

tomograph.configure(service="leaving", backends=[sys.argv[1]], environ={})
other_backend = ZipkinBackend(sys.argv[2], interval=60, timeout=600)
other = tomograph.Tracer("other", backends=[other_backend])
for _ in range(20):
    with tomograph.span("default tracer"):
        pass
    with other.span("own tracer"):
        pass
atexit.register(lambda: exit_began.append(time.monotonic()))  # runs first
"""


def _exit_with_queued_spans(tmp_path: Path, url: str) -> tuple[dict[str, Any], str]:
    """Run EXIT_SCRIPT against ``url``; what it printed at exit, and its log lines."""
    script = tmp_path / "leaving.py"
    script.write_text(EXIT_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")}
    done = subprocess.run(
        [sys.executable, str(script), f"zipkin+{url}?interval=60&timeout=600", url],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,  # a safety net only: the exit's own duration is checked below
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def _every_span_counted(stats: dict[str, int]) -> None:
    assert stats["queued"] == 20
    assert stats["queued"] == stats["sent"] + stats["dropped"] + stats["failed"] + stats["pending"]


def test_spans_still_queued_at_exit_are_delivered(tmp_path: Path) -> None:
    with RecordingZipkinServer() as server:
        result, log = _exit_with_queued_spans(tmp_path, server.url)
        spans = server.wait_for(40)
    names = [span["name"] for span in spans]
    assert names.count("default tracer") == 20
    assert names.count("own tracer") == 20
    assert (result["default"]["sent"], result["other"]["sent"]) == (20, 20)
    assert log == ""  # nothing to warn about


def test_exit_waits_one_bounded_budget_when_the_collector_never_answers(tmp_path: Path) -> None:
    with never_answering_server() as url:
        result, log = _exit_with_queued_spans(tmp_path, url)
    # One budget for every exit hook (two hooks with a budget each took 4.5 s). The margin
    # covers a loaded machine: the waits end on deadlines, only the work after them adds up.
    assert result["exit_seconds"] < EXIT_FLUSH_SECONDS + 1.5, result
    _every_span_counted(result["default"])
    _every_span_counted(result["other"])
    # Each of the 40 undelivered spans is in a warning: still in flight, or dropped unsent.
    counted = re.findall(r"(?:closed with|closed while) (\d+) spans", log)
    assert sum(map(int, counted)) == 40, log


TWO_BACKENDS_EXIT_SCRIPT = """
import atexit, json, sys, time


def report():  # registered first, so it runs last: after tomograph's exit hooks
    print(json.dumps([dict(backend.stats()) for backend in tomograph.get_tracer().backends]))


atexit.register(report)
import tomograph

tomograph.configure(service="leaving", backends=[sys.argv[1], sys.argv[2]], environ={})
hung, healthy = tomograph.get_tracer().backends
with tomograph.span("first"):  # wakes both workers: the hung one stays in its send
    pass
deadline = time.monotonic() + 10
while healthy.stats()["sent"] < 1 and time.monotonic() < deadline:
    time.sleep(0.01)
for _ in range(20):  # queued while the workers wait for their interval
    with tomograph.span("at exit"):
        pass
"""


def test_a_collector_that_never_answers_leaves_the_exit_budget_to_the_other_backends(
    tmp_path: Path,
) -> None:
    # The exit closed the backends one after another: the first, stuck on a hung collector,
    # spent the whole budget and the next was closed with none left, dropping what it held.
    script = tmp_path / "two_backends.py"
    script.write_text(TWO_BACKENDS_EXIT_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")}
    with never_answering_server() as hung, RecordingZipkinServer() as server:
        server.faults.extend([("sleep", 0.0), ("sleep", 0.3)])  # healthy, answering in 0.3 s
        done = subprocess.run(
            [
                sys.executable,
                str(script),
                f"zipkin+{hung}?interval=60&timeout=600",
                f"zipkin+{server.url}?interval=60",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=30,  # a safety net only
            check=False,
        )
    assert done.returncode == 0, done.stderr
    at_hung, at_healthy = json.loads(done.stdout.strip().splitlines()[-1])
    assert (at_healthy["sent"], at_healthy["dropped"]) == (21, 0), done.stderr
    assert at_hung["queued"] == at_hung["dropped"] + at_hung["pending"] == 21


def test_encoded_spans_validate_against_zipkin_openapi() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=100, deadline=None)
    @given(st.lists(finished_spans(), min_size=1, max_size=3))
    def check(spans: list[tomograph.Span]) -> None:
        validate_list_of_spans(json.loads(zipkin_json.encode_spans(spans)))

    check()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("zipkin+http://127.0.0.1:9411?encoding=xml", "encoding must be json or proto"),
        ("zipkin+http://127.0.0.1:9411?colour=red", "unknown parameter 'colour'"),
        ("zipkin+http://127.0.0.1:9411?timeout=soon", "timeout must be a number"),
        ("zipkin+http://127.0.0.1:9411?interval=inf", "interval must be a finite number"),
        ("zipkin+http://127.0.0.1:9411?timeout=nan", "timeout must be a finite number"),
        ("zipkin+http://127.0.0.1:9411?gzip=maybe", "gzip must be true or false"),
        ("zipkin+http://127.0.0.1:9411?queue_size=0", "at least 1"),
        ("zipkin+http://?x", "unknown parameter"),
    ],
)
def test_bad_urls_are_configuration_errors(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        config.backend_from_url(url)


def test_credentials_in_the_url_are_sent_as_basic_auth_and_never_shown() -> None:
    with RecordingZipkinServer() as server:
        url = server.url.replace("http://", "zipkin+http://alice:s%3Acret@")
        backend = config.backend_from_url(url)
        Tracer("svc", backends=[backend]).start_span("op").finish()
        assert backend.flush(5)
        backend.close(1)
    sent = server.requests[0]["headers"]["Authorization"]
    assert sent == "Basic " + base64.b64encode(b"alice:s:cret").decode()
    assert "cret" not in repr(backend) + backend.endpoint + backend.transport.sender.name


def test_url_path_prefix_is_kept() -> None:
    backend = config.backend_from_url("zipkin+https://gateway.example/zipkin/?timeout=1")
    assert isinstance(backend, ZipkinBackend)
    assert backend.endpoint == "https://gateway.example/zipkin/api/v2/spans"
    backend.close(0)
