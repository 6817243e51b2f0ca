"""WSGI middleware cost: tomograph's ``Middleware`` beside OpenTelemetry's WSGI middleware.

1. In process: the middleware calling a trivial WSGI app directly (µs per request, the bare
   app's time subtracted), for a new trace and for a request carrying ``traceparent``.
2. Over loopback: the same app served by waitress in a subprocess, loaded by ``wrk`` (or a
   Python keep-alive client when wrk is missing) from another process; requests/second and the
   overhead per request in µs (1/rps with the middleware minus 1/rps without).

Both tracers record every request into memory (bounded), so the numbers are the cost of
tracing, not of exporting. ``python benchmarks/bench_wsgi.py --serve KIND PORT`` is the server.

``--instructions`` counts the in-process part with valgrind's callgrind instead of timing it (see
``_callgrind``): numbers that machine load does not move; the loopback part is skipped then.
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

import _callgrind
import tomograph
from _harness import Result, print_table, time_per_op, wsgi_request
from tomograph.reporting.memory import MemoryBackend

KINDS = ("bare", "tomograph", "opentelemetry")
ENVIRON: dict[str, Any] = {
    "REQUEST_METHOD": "GET",
    "PATH_INFO": "/hello",
    "SCRIPT_NAME": "",
    "QUERY_STRING": "",
    "SERVER_NAME": "127.0.0.1",
    "SERVER_PORT": "8080",
    "SERVER_PROTOCOL": "HTTP/1.1",
    "REMOTE_ADDR": "127.0.0.1",
    "REMOTE_PORT": "50000",
    "HTTP_HOST": "127.0.0.1:8080",
    "HTTP_USER_AGENT": "bench",
    "wsgi.version": (1, 0),
    "wsgi.url_scheme": "http",
}
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
CASES: dict[str, dict[str, Any]] = {
    "new trace": {},
    "incoming traceparent": {"HTTP_TRACEPARENT": TRACEPARENT},
}


def hello(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"hello"]


def build_app(kind: str) -> Callable[..., Any] | None:
    """The trivial app wrapped by ``kind``'s middleware; None if that library is missing."""
    if kind == "bare":
        return hello
    if kind == "tomograph":
        tomograph.configure(service="bench", backends=[MemoryBackend(max_spans=1000)], environ={})
        return tomograph.Middleware(hello, service_name="bench")
    try:
        from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    except ImportError:
        return None
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    middleware = OpenTelemetryMiddleware(hello, tracer_provider=provider)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if len(exporter._finished_spans) > 1000:
            exporter.clear()  # keep memory bounded, as tomograph's MemoryBackend does
        return middleware(environ, start_response)  # type: ignore[no-any-return]

    return app


def one_request(app: Callable[..., Any], extra: dict[str, Any]) -> Callable[[], None]:
    return wsgi_request(app, lambda: {**ENVIRON, **extra})


def count(kind: str, case: str, iterations: int) -> None:
    """Worker under callgrind: one case ``iterations`` times (see ``_callgrind.run_counted``)."""
    app = build_app(kind)
    if app is None:
        raise SystemExit(f"{kind} is not installed")
    _callgrind.run_counted(one_request(app, CASES[case]), iterations)


def _counted(kind: str, case: str) -> float | None:
    probe = subprocess.run([sys.executable, __file__, "--count", kind, case, "1"], check=False)
    if probe.returncode:
        return None
    return _callgrind.instructions_per_op(
        lambda n: [sys.executable, __file__, "--count", kind, case, str(n)],
        *_callgrind.MANY_ITERATIONS,
    )


def in_process(instructions: bool = False) -> None:
    results: list[Result] = []
    unit = "instructions" if instructions else "µs"
    for case, extra in CASES.items():
        bare = _counted("bare", case) if instructions else time_per_op(one_request(hello, extra))
        for kind in ("tomograph", "opentelemetry"):
            if instructions:
                cost = _counted(kind, case)
            else:
                app = build_app(kind)
                cost = None if app is None else time_per_op(one_request(app, extra))
            if cost is None or bare is None:
                print(f"({kind} WSGI middleware not installed: skipped)", file=sys.stderr)
                continue
            library = "opentelemetry-wsgi" if kind == "opentelemetry" else kind
            results.append(Result(case, library, cost - bare))
    print_table(
        f"WSGI middleware, in process ({unit} per request added to a trivial app; "
        "ratio: peer / tomograph)",
        results,
        unit=unit,
    )


# -- over loopback ---------------------------------------------------------------------------


def serve(kind: str, port: int) -> None:
    import waitress

    app = build_app(kind)
    if app is None:
        raise SystemExit(f"{kind} is not installed")
    waitress.serve(app, host="127.0.0.1", port=port, threads=4, _quiet=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for(port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"server on {port} did not start")


def _load_with_wrk(port: int, seconds: float) -> float:
    output = subprocess.run(
        ["wrk", "-t1", "-c4", f"-d{int(seconds)}s", f"http://127.0.0.1:{port}/hello"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if match is None:
        raise RuntimeError(f"unexpected wrk output:\n{output}")
    return float(match.group(1))


def _load_with_python(port: int, seconds: float) -> float:
    # A single keep-alive connection in a separate process: the same for every server.
    code = (
        "import http.client,sys,time\n"
        f"c=http.client.HTTPConnection('127.0.0.1',{port});n=0\n"
        f"end=time.perf_counter()+{seconds}\n"
        "while time.perf_counter()<end:\n"
        " c.request('GET','/hello');c.getresponse().read();n+=1\n"
        f"print(n/{seconds})\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def over_loopback(seconds: float = 4.0, rounds: int = 2) -> None:
    load = _load_with_wrk if shutil.which("wrk") else _load_with_python
    loader = "wrk -t1 -c4" if shutil.which("wrk") else "python keep-alive client"
    best: dict[str, float] = {}
    for _ in range(rounds):
        for kind in KINDS:
            port = _free_port()
            server = subprocess.Popen(
                [sys.executable, __file__, "--serve", kind, str(port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            try:
                _wait_for(port)
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                connection.request("GET", "/hello")  # warm up
                connection.getresponse().read()
                connection.close()
                best[kind] = max(best.get(kind, 0.0), load(port, seconds))
            except (TimeoutError, subprocess.CalledProcessError) as error:
                print(f"({kind} server failed: {error})", file=sys.stderr)
            finally:
                server.terminate()
                server.wait(10)
    print(
        f"\n## WSGI middleware over loopback (waitress, 4 threads; load: {loader}, "
        f"{seconds:.0f} s, best of {rounds})\n"
    )
    print("server | requests/s | overhead µs/request")
    print("-|-|-")
    bare = best.get("bare")
    for kind in KINDS:
        rps = best.get(kind)
        if rps is None:
            continue
        overhead = "-" if kind == "bare" or not bare else f"{(1 / rps - 1 / bare) * 1e6:.1f}"
        print(f"{kind} | {rps:.0f} | {overhead}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instructions", action="store_true", help="count with callgrind")
    parser.add_argument("--serve", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--count", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]))
        return
    if args.count:
        kind, case, iterations = args.count
        count(kind, case, int(iterations))
        return
    in_process(args.instructions)
    if not args.instructions and os.environ.get("BENCH_SKIP_LOOPBACK") != "1":
        over_loopback()


if __name__ == "__main__":
    main()
