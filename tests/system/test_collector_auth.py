"""tomograph's own clients against a real ``tomograph serve --token``.

The backends (Zipkin JSON, Zipkin proto3, OTLP) deliver with the token, from code and from the
environment; without it they fail loudly once. ``tomograph demo --send`` works with ``--token``
or ``TOMOGRAPH_COLLECTOR_TOKEN`` and says what is wrong when the collector answers 401. The
token never leaves the process in a log line or a printed link except on a terminal.
"""

from __future__ import annotations

import json
import logging
import os
import pty
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("uvicorn", reason="the collector extra is not installed")

from tests.support.collector import http, running_collector
from tests.support.servers import REPO_ROOT, free_port, wait_for_port

from tomograph import Tracer, config
from tomograph.collector.server import ui_link
from tomograph.reporting.zipkin import ZipkinBackend

pytestmark = pytest.mark.integration

TOKEN = "c0llector-token+/="


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_collector(tmp_path_factory.mktemp("protected"), "--token", TOKEN) as url:
        yield url


def query(url: str, path: str) -> Any:
    status, body = http("GET", url + path, headers={"Authorization": f"Bearer {TOKEN}"})
    assert status == 200, (status, body)
    return json.loads(body)


def trace_names(url: str, trace_id: int, count: int, timeout: float = 15.0) -> set[str]:
    """The span names of a trace once ``count`` spans are stored (ingest is asynchronous)."""
    deadline = time.monotonic() + timeout
    while True:
        status, body = http(
            "GET",
            f"{url}/api/v2/trace/{trace_id:032x}",
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        spans = json.loads(body) if status == 200 else []
        if len(spans) >= count or time.monotonic() > deadline:
            return {span["name"] for span in spans}
        time.sleep(0.05)


def otlp(url: str, **options: Any) -> Any:
    pytest.importorskip("opentelemetry.proto")
    from tomograph.reporting.otlp import OtlpBackend

    return OtlpBackend(url, **options)


BACKENDS: dict[str, Callable[..., Any]] = {
    "zipkin-json": ZipkinBackend,
    "zipkin-proto-gzip": lambda url, **options: ZipkinBackend(
        url, encoding="proto", use_gzip=True, **options
    ),
    "otlp": otlp,
}


def two_spans(backend: Any, service: str) -> int:
    tracer = Tracer(service, backends=[backend])
    with tracer.span("checkout", kind="server") as root:
        with tracer.span("charge card", kind="client"):
            pass
    assert backend.flush(10)
    return root.context.trace_id


@pytest.mark.parametrize("kind", list(BACKENDS))
def test_backends_with_the_token_deliver(collector: str, kind: str) -> None:
    backend = BACKENDS[kind](collector, token=TOKEN)
    trace_id = two_spans(backend, f"shop-{kind}")
    stats = backend.stats()
    backend.close(1)
    assert (stats["sent"], stats["failed"]) == (2, 0)
    assert trace_names(collector, trace_id, 2) == {"checkout", "charge card"}
    assert f"shop-{kind}" in query(collector, "/api/v2/services")


def test_backends_made_from_urls_take_credentials_from_the_environment(collector: str) -> None:
    pytest.importorskip("opentelemetry.proto")
    url = collector.removeprefix("http://")
    environ = {
        "TOMOGRAPH_ZIPKIN_TOKEN": TOKEN,
        "TOMOGRAPH_OTLP_HEADERS": "Authorization=Bearer%20c0llector-token%2B%2F%3D",
    }
    try:
        tracer = config.configure(
            service="from-env",
            backends=[f"zipkin+http://{url}", f"otlp+http://{url}"],
            environ=environ,
        )
        with tracer.span("job") as span:
            pass
        assert tracer.flush(10)
        assert [backend.stats()["sent"] for backend in tracer.backends] == [1, 1]
        assert trace_names(collector, span.context.trace_id, 1) == {"job"}
    finally:
        config.reset()


@pytest.mark.parametrize(
    ("token", "advice"),
    [(None, "requires credentials and none were sent"), ("wrong-token", "refused the credentials")],
)
@pytest.mark.parametrize("kind", list(BACKENDS))
def test_without_the_right_token_spans_fail_and_the_refusal_is_logged_once(
    collector: str, caplog: pytest.LogCaptureFixture, kind: str, token: str | None, advice: str
) -> None:
    backend = BACKENDS[kind](collector, token=token, max_retries=3)
    with caplog.at_level(logging.INFO, logger="tomograph"):
        for _ in range(3):
            two_spans(backend, "refused")
    stats = backend.stats()
    backend.close(1)
    assert (stats["sent"], stats["failed"], stats["retries"]) == (0, 6, 0)
    logged = [record.getMessage() for record in caplog.records]
    assert len(logged) == 1, logged
    assert "HTTP 401" in logged[0] and advice in logged[0]
    assert "wrong-token" not in caplog.text + repr(backend) + repr(stats)


# -- tomograph demo --send ------------------------------------------------------------------


def demo(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "TOMOGRAPH_COLLECTOR_TOKEN"}
    return subprocess.run(
        [sys.executable, "-m", "tomograph", "demo", "--no-color", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
        env={**environ, **(env or {})},
    )


def sent_trace_id(output: str) -> int:
    match = re.search(r"#/trace/([0-9a-f]{32})", output)
    assert match, output
    return int(match.group(1), 16)


@pytest.mark.parametrize("mode", [[], ["--offline"]])
def test_demo_send_with_the_token_delivers_the_trace(collector: str, mode: list[str]) -> None:
    result = demo("--send", collector, "--token", TOKEN, *mode)
    assert result.returncode == 0, result.stderr
    trace_id = sent_trace_id(result.stdout)
    assert len(trace_names(collector, trace_id, 5)) >= 4
    # stdout is a pipe, not a terminal: the link carries no token
    assert TOKEN not in result.stdout + result.stderr
    assert "(the page asks for the token)" in result.stdout


def test_demo_send_reads_the_collectors_token_variable(collector: str) -> None:
    result = demo("--send", collector, "--offline", env={"TOMOGRAPH_COLLECTOR_TOKEN": TOKEN})
    assert result.returncode == 0, result.stderr
    assert trace_names(collector, sent_trace_id(result.stdout), 5)


@pytest.mark.parametrize("mode", [[], ["--offline"]])
@pytest.mark.parametrize(
    ("token", "message"),
    [
        ([], "requires a token: pass --token TOKEN or set TOMOGRAPH_COLLECTOR_TOKEN"),
        (["--token", "wrong-token"], "refused the token"),
    ],
)
def test_demo_send_says_why_a_protected_collector_refuses_it(
    collector: str, mode: list[str], token: list[str], message: str
) -> None:
    result = demo("--send", collector, *token, *mode)
    assert result.returncode == 1
    assert message in result.stderr
    assert "no collector answers" not in result.stderr
    assert "Traceback" not in result.stderr


def test_demo_refuses_a_token_http_cannot_carry(collector: str) -> None:
    result = demo("--send", collector, "--token", "naïve")
    assert result.returncode == 1
    assert "the token must be printable ASCII" in result.stderr
    assert "Traceback" not in result.stderr


# -- the link tomograph serve prints ----------------------------------------------------------


def serve_output(tmp_path: Path, on_terminal: bool) -> tuple[str, str, int]:
    """What ``tomograph serve --token`` prints on stdout (a terminal or a pipe) and stderr."""
    port = free_port()
    argv = [sys.executable, "-m", "tomograph", "serve", "--port", str(port)]
    argv += ["--db", str(tmp_path / "t.db"), "--token", TOKEN]
    stderr_path = tmp_path / "stderr.log"
    if on_terminal:
        reader, writer = pty.openpty()
    else:
        reader, writer = os.pipe()
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(argv, stdout=writer, stderr=stderr, stdin=subprocess.DEVNULL)
    os.close(writer)
    try:
        wait_for_port(port)
        output = b""
        while b"\n" not in output:
            output += os.read(reader, 4096)
    finally:
        process.terminate()
        process.wait(10)
        os.close(reader)
    return output.decode(), stderr_path.read_text(), port


def test_serve_prints_a_link_with_the_token_on_a_terminal_only(tmp_path: Path) -> None:
    terminal, log, port = serve_output(tmp_path, on_terminal=True)
    link = ui_link(f"http://127.0.0.1:{port}", "/", TOKEN)
    assert link == f"http://127.0.0.1:{port}/#/?token=c0llector-token%2B%2F%3D"
    assert terminal.splitlines()[0] == f"web UI: {link}"
    assert TOKEN not in log and "c0llector-token" not in log

    piped, log, port = serve_output(tmp_path, on_terminal=False)
    assert (
        piped.splitlines()[0] == f"web UI: http://127.0.0.1:{port}/ (the page asks for the token)"
    )
    assert "c0llector-token" not in piped + log


def test_demo_reports_to_a_protected_collector_on_its_port_instead_of_starting_one(
    collector: str,
) -> None:
    port = collector.rsplit(":", 1)[1]
    refused = demo("--port", port, "--no-wait")
    assert refused.returncode == 1
    assert "requires a token" in refused.stderr and "another program" not in refused.stderr
    accepted = demo("--port", port, "--no-wait", "--token", TOKEN)
    assert accepted.returncode == 0, accepted.stderr
    assert "started the tomograph collector" not in accepted.stdout
    assert len(trace_names(collector, sent_trace_id(accepted.stdout), 5)) >= 4
