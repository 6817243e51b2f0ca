"""Every python snippet of README.md, pasted as is, does what the text around it says.

Each case runs in a fresh interpreter: the snippets it builds on (in README order), the snippet
itself, then a check of what the README promises (the span printed, the names in memory, the
trace continued, ...). A new snippet without a case fails ``test_every_snippet_has_a_case``.

The harness, in full (nothing else is changed in the README's text):

* The integrations snippet names the application's own objects, ``wsgi_app``, ``asgi_app`` and
  ``engine``: a tiny WSGI app, a tiny ASGI app and an in-memory SQLite engine stand in, and the
  default tracer keeps spans in memory so the check can look at them.
* The "carry the trace" snippet calls the application's ``send(url, headers=...)`` and reads
  an incoming ``request``: ``send`` records the headers it is given and ``request`` is that
  record (a dict of headers is one of the request types the text lists).
* The collector snippet names Zipkin's port 9411, which a developer's own ``tomograph serve``
  may hold: the test runs a real collector on a free port and puts that port in the snippet.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.support.servers import REPO_ROOT

README = REPO_ROOT / "README.md"
SNIPPETS = re.findall(r"^```python\n(.*?)^```", README.read_text(), re.MULTILINE | re.DOTALL)
DONE = "README CHECK PASSED"


def snippet(marker: str) -> int:
    """The index of the one snippet that contains ``marker``."""
    found = [index for index, text in enumerate(SNIPPETS) if marker in text]
    assert len(found) == 1, f"{marker!r} is in snippets {found}"
    return found[0]


TRACE = snippet('backends=["log://"]')
SAMPLE = snippet("sampling.rate_limited")
MEMORY = snippet("MemoryBackend()")
CLASSIC = snippet("tomograph.start('my service'")
FANOUT = snippet("otlp+http://otel-collector:4318")
COLLECTOR = snippet('"zipkin+http://127.0.0.1:9411"')
CARRY = snippet("add_trace_info_header")
INTEGRATIONS = snippet("patch_all()")
OPENTELEMETRY = snippet("tomograph.opentelemetry.install()")


@dataclass
class Run:
    stdout: str
    stderr: str

    def span_lines(self) -> list[dict[str, Any]]:
        """The spans ``log://`` printed (JSON lines on stderr)."""
        return [json.loads(line) for line in self.stderr.splitlines() if line.startswith("{")]


def run(
    parts: list[int], check: str, *, before: str = "", replace: tuple[str, str] = ("", "")
) -> Run:
    """Run README snippets ``parts`` in order (``before`` the last one), then ``check``."""
    texts = [SNIPPETS[index] for index in parts]
    texts[-1] = before + texts[-1].replace(*replace)
    program = "\n".join([*texts, check, f"print({DONE!r})"])
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("TOMOGRAPH_", "OTEL_"))}
    result = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        timeout=120,
        env=environ,
        check=False,
    )
    assert result.returncode == 0 and DONE in result.stdout, (
        f"program:\n{program}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )
    return Run(result.stdout, result.stderr)


def test_every_snippet_has_a_case() -> None:
    cases = [TRACE, SAMPLE, MEMORY, CLASSIC, FANOUT, COLLECTOR, CARRY, INTEGRATIONS, OPENTELEMETRY]
    assert sorted(cases) == list(range(len(SNIPPETS)))


def test_trace_something_prints_the_span() -> None:
    # Nothing in the snippet sets up logging: the span must still be seen.
    spans = run([TRACE], "").span_lines()
    assert [span["name"] for span in spans] == ["charge card"]
    (span,) = spans
    assert span["kind"] == "CLIENT"
    assert span["localEndpoint"] == {"serviceName": "checkout"}
    assert span["tags"] == {"amount": "12.5"}
    assert [note["value"] for note in span["annotations"]] == ["card accepted"]


def test_sampling_records_the_promised_share_of_traces() -> None:
    # Each line of the snippet is one configuration: check each as it is made.
    check = """
import time
lines = [line for line in SAMPLE_SNIPPET.splitlines() if line.startswith("tomograph.configure")]
assert len(lines) == 2, lines
exec(lines[0])
sampled = sum(tomograph.start_span("op").sampled for _ in range(4000))
assert 300 <= sampled <= 500, sampled     # 10% of 4000: 400, and 5 standard deviations
exec(lines[1])
started = time.monotonic()
sampled = sum(tomograph.start_span("op").sampled for _ in range(4000))
elapsed = time.monotonic() - started
assert 1 <= sampled <= 50 + 50 * elapsed + 1, (sampled, elapsed)
"""
    run([TRACE, SAMPLE], f"SAMPLE_SNIPPET = {SNIPPETS[SAMPLE]!r}\n" + check)


def test_memory_backend_sees_the_instrumented_code() -> None:
    # The snippet asserts it itself. load_cart was decorated before this configure(): this
    # holds once a decorator uses the tracer current when the function runs.
    run([TRACE, SAMPLE, MEMORY], "")


def test_classic_api_continues_the_trace_in_another_thread() -> None:
    spans = run([TRACE, CLASSIC], "myfunc()").span_lines()
    by_name = {span["name"]: span for span in spans}
    assert [span["name"] for span in spans] == ["charge card", "a query", "a job", "myfunc"]
    query, job, call = by_name["a query"], by_name["a job"], by_name["myfunc"]
    assert (job["traceId"], job["parentId"]) == (query["traceId"], query["id"])
    assert query["tags"] == {"key": "value"}
    notes = [note["value"] for note in query["annotations"]]
    assert notes == ["start", "something happened", "stop"]
    assert query["localEndpoint"] == {"serviceName": "my service"}
    assert call["localEndpoint"] == {"serviceName": "My Server"} and "parentId" not in call


def test_reporting_to_three_backends_counts_every_span() -> None:
    # The hosts of the snippet do not resolve here: a dead collector, which must not break
    # the application, and whose spans are counted.
    check = """
with tomograph.span("checkout"):
    pass
totals = tomograph.stats()
assert len(totals["backends"]) == 3, totals
for counts in [totals, *totals["backends"].values()]:
    settled = counts["sent"] + counts["dropped"] + counts["failed"] + counts["pending"]
    assert counts["queued"] == settled, counts
assert totals["queued"] == 3
"""
    run([TRACE, FANOUT], check)


@pytest.mark.integration
def test_a_configured_tomograph_reports_to_tomograph_serve(tmp_path: Path) -> None:
    pytest.importorskip("uvicorn", reason="the collector extra is not installed")
    from tests.support.collector import get_json, running_collector

    with running_collector(tmp_path) as url:
        port = url.rsplit(":", 1)[1]
        check = """
with tomograph.span("checkout") as span:
    pass
assert tomograph.flush(10)
print("TRACE", format(span.trace_id, "032x"))
"""
        result = run([TRACE, COLLECTOR], check, replace=(":9411", f":{port}"))
        trace_id = re.search(r"TRACE (\w+)", result.stdout).group(1)  # type: ignore[union-attr]
        assert [span["name"] for span in get_json(f"{url}/api/v2/trace/{trace_id}")] == ["checkout"]


def test_the_trace_crosses_to_the_server() -> None:
    harness = """
url = "http://billing.internal/charge"
request = {}                              # what the server receives
def send(url, headers):
    request.update(headers)
"""
    spans = {span["name"]: span for span in run([TRACE, CARRY], "", before=harness).span_lines()}
    client, server = spans["call billing"], spans["charge"]
    assert client["kind"] == "CLIENT"
    assert server["traceId"] == client["traceId"]
    assert server["parentId"] == client["id"]
    assert server["localEndpoint"] == {"serviceName": "billing"}


def test_the_integrations_trace_what_they_promise() -> None:
    pytest.importorskip("sqlalchemy")
    pytest.importorskip("starlette")
    harness = """
import tomograph
from tomograph.reporting import MemoryBackend

memory = MemoryBackend()
tomograph.configure(service="shop", backends=[memory])

def wsgi_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]

async def asgi_app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})

import sqlalchemy
engine = sqlalchemy.create_engine("sqlite://")
"""
    check = """
import asyncio, http.server, logging, threading, urllib.request, wsgiref.util

environ = {}
wsgiref.util.setup_testing_defaults(environ)
body = tomograph.Middleware(wsgi_app, service_name="front")(environ, lambda *args: None)
assert b"".join(body) == b"ok"
body.close()                                      # a WSGI server ends the request so

async def call_asgi():
    scope = {"type": "http", "method": "GET", "path": "/items", "headers": [],
             "query_string": b"", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "scheme": "http", "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 5000)}
    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}
    async def send(message):
        pass
    await app(scope, receive, send)
asyncio.run(call_asgi())

with engine.connect() as connection:
    connection.execute(sqlalchemy.text("SELECT 1"))

class Quiet(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(204)
        self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", 0), Quiet)
threading.Thread(target=server.handle_request, daemon=True).start()
urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/ping").close()

records = []
class Keep(logging.Handler):
    def emit(self, record):
        records.append(self.format(record))
handler = Keep()
handler.setFormatter(logging.Formatter("%(trace_id)s %(message)s"))
logging.getLogger("shop").addHandler(handler)
with tomograph.span("logged") as span:
    logging.getLogger("shop").warning("hello")
assert records == [f"{span.trace_id:032x} hello"], records

kinds = {(s.service_name, s.kind.value if s.kind else None) for s in memory.spans}
assert ("front", "SERVER") in kinds, kinds        # WSGI
assert ("back", "SERVER") in kinds, kinds         # ASGI
sql = [s for s in memory.spans if "SELECT 1" in str(s.tags.get("db.statement", ""))]
assert sql, memory.names()                        # a span per SQL statement
clients = [s for s in memory.spans if s.kind is not None and s.kind.value == "CLIENT"]
assert any("/ping" in str(s.tags.get("http.url", "")) for s in clients), memory.names()
"""
    run([INTEGRATIONS], check, before=harness)


def test_otel_api_spans_become_tomograph_spans() -> None:
    # A library's tracer taken before install() (at its import) reports through tomograph, in
    # one trace with tomograph's own spans.
    check = """
with library_tracer.start_as_current_span("library call") as library_span:
    with tomograph.span("inside"):
        pass
tomograph.flush()
"""
    before = "from opentelemetry import trace\nlibrary_tracer = trace.get_tracer('lib')\n"
    spans = run([TRACE, OPENTELEMETRY], check, before=before).span_lines()
    by_name = {span["name"]: span for span in spans}
    assert set(by_name) == {"charge card", "library call", "inside"}
    library, inside = by_name["library call"], by_name["inside"]
    assert inside["parentId"] == library["id"] and inside["traceId"] == library["traceId"]
    assert library["tags"]["otel.scope.name"] == "lib"
