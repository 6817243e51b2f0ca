"""The ``tomograph`` command: ``tomograph demo``, ``tomograph run`` (and, with the collector
extra, ``serve``)."""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from tomograph.ids import format_trace_id

if TYPE_CHECKING:
    from tomograph.span import Span

__all__ = ["main"]


def _print_waterfall(spans: Sequence[Span], args: argparse.Namespace) -> None:
    from tomograph.waterfall import render_waterfall, rows_from_spans

    width = shutil.get_terminal_size((100, 24)).columns
    color = sys.stdout.isatty() and not args.no_color
    print(render_waterfall(rows_from_spans(spans), width=min(width, 140), color=color))


def _missing_for_collector_demo() -> list[str]:
    import importlib.util

    needed = ("starlette", "uvicorn", "sqlalchemy")
    return [name for name in needed if importlib.util.find_spec(name) is None]


def _demo(args: argparse.Namespace) -> int:
    missing = _missing_for_collector_demo()
    if args.offline or missing:
        from tomograph.demo import run_demo

        if missing and not args.offline:
            print(
                f"(the full demo needs {', '.join(missing)}: pip install "
                "'tomograph-tracing[collector,sqlalchemy]'; showing the in-process demo)\n",
                file=sys.stderr,
            )
        memory, _ = run_demo()
        _print_waterfall(memory.spans, args)
        if args.send:
            return _send_demo(args.send, memory.spans, _collector_token(args, "demo"))
        return 0
    return _demo_with_collector(args)


def _collector_token(args: argparse.Namespace, command: str) -> str | None:
    """``--token``, else ``TOMOGRAPH_COLLECTOR_TOKEN`` (what ``tomograph serve`` reads too);
    one line on stderr and exit status 1 for a token no HTTP header can carry."""
    from tomograph.collector.settings import check_token
    from tomograph.config import collector_token_from_environment
    from tomograph.errors import ConfigurationError

    token = args.token if args.token is not None else collector_token_from_environment()
    if not token:
        return None
    try:
        check_token(token)
    except ConfigurationError as error:
        raise SystemExit(f"tomograph {command}: {error}") from None
    return token


def _probe_collector(base: str, token: str | None) -> int | None:
    """The HTTP status of the collector's ``/api/v2/services``; None if nothing answers."""
    import urllib.error
    import urllib.request

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(f"{base}/api/v2/services", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        error.close()
        return int(error.code)
    except (OSError, ValueError):
        return None


def _refusal(base: str, status: int | None, token: str | None) -> str | None:
    """Why the demo cannot report to the collector at ``base`` (None: it can)."""
    from tomograph.urls import strip_credentials

    if status == 200:
        return None
    base = strip_credentials(base)
    if status is None:
        return f"no collector answers at {base} (is `tomograph serve` running?)"
    if status == 401 and token:
        return (
            f"the collector at {base} refused the token "
            "(check --token or TOMOGRAPH_COLLECTOR_TOKEN)"
        )
    if status == 401:
        return (
            f"the collector at {base} requires a token: pass --token TOKEN "
            "or set TOMOGRAPH_COLLECTOR_TOKEN"
        )
    if status == 403:
        return f"the collector at {base} refused the request (HTTP 403)"
    return f"{base} answered HTTP {status}: is it a tomograph or Zipkin collector?"


def _collector_base(url: str) -> str:
    return url.rstrip("/").removesuffix("/api/v2/spans")


def _demo_with_collector(args: argparse.Namespace) -> int:
    """Run the HTTP demo, report to a collector (started here if none runs), print the URL."""
    from tomograph.collector import CollectorSettings
    from tomograph.collector.server import BackgroundCollector, print_ui_link
    from tomograph.collector.storage import StoreOpenError
    from tomograph.demo_services import run_http_demo
    from tomograph.reporting.memory import MemoryBackend
    from tomograph.reporting.zipkin import ZipkinBackend

    base = _collector_base(args.send or f"http://127.0.0.1:{args.port}")
    token = _collector_token(args, "demo")
    collector: BackgroundCollector | None = None
    status = _probe_collector(base, token)
    if status != 200:
        if args.send or status is not None:  # the collector named, or a server on our port
            print(_refusal(base, status, token), file=sys.stderr)
            return 1
        settings = CollectorSettings(port=args.port, **_database(args.db))
        try:
            collector = BackgroundCollector(settings).start()
        except (OSError, StoreOpenError) as error:  # CollectorStartError is an OSError
            print(f"tomograph demo: {error}", file=sys.stderr)
            return 1
        base = collector.url
        token = None  # the collector started here asks for none
        print(f"started the tomograph collector on {base} (traces in {settings.db_location})")
    try:
        memory = MemoryBackend()
        zipkin = ZipkinBackend(base, timeout=5.0, max_retries=2, token=token)
        result = run_http_demo([memory, zipkin])
        delivered = zipkin.flush(10.0)
        zipkin.close(1.0)
        _print_waterfall(memory.spans, args)
        if not delivered:
            print(f"could not deliver the trace to {base}", file=sys.stderr)
            return 1
        print_ui_link("trace", base, f"/trace/{format_trace_id(result.trace_id)}", token)
        if collector is not None and not args.no_wait:
            print("serving the collector and its web UI until Ctrl-C", flush=True)
            collector.wait()
        return 0
    finally:
        if collector is not None:
            collector.stop()


def _send_demo(url: str, spans: Sequence[Span], token: str | None) -> int:
    """Report the demo's spans to a Zipkin-compatible collector (``tomograph serve``)."""
    from tomograph.reporting.zipkin import ZipkinBackend

    base = _collector_base(url)
    refusal = _refusal(base, _probe_collector(base, token), token)
    if refusal:
        print(refusal, file=sys.stderr)
        return 1
    backend = ZipkinBackend(url, max_retries=0, timeout=5.0, token=token)
    for span in spans:
        backend.report(span)
    delivered = backend.flush(10.0) and backend.stats().get("sent", 0) == len(spans)
    backend.close(1.0)
    if not delivered:
        print(f"could not send the trace to {base}", file=sys.stderr)
        return 1
    from tomograph.collector.server import print_ui_link

    route = f"/trace/{format_trace_id(spans[0].trace_id)}"
    print_ui_link(f"sent {len(spans)} spans", base, route, token)
    return 0


def _size(text: str) -> int:
    """A byte size such as ``500M``, ``2G``, ``10MiB`` or ``1048576``."""
    units = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    clean = text.strip().lower().removesuffix("ib").removesuffix("b")
    number, unit = (clean[:-1], clean[-1]) if clean[-1:] in units and clean[-1:] else (clean, "")
    try:
        value = int(float(number) * units[unit])
    except (ValueError, KeyError, OverflowError):  # OverflowError: "inf"
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 500M, 2G)") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive: {text!r}")
    return value


def _port(text: str) -> int:
    """A TCP port number, 0 (any free port) to 65535."""
    if not (text.isascii() and text.isdigit() and len(text) <= 5) or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"not a port: {text!r} (0 to 65535)")
    return int(text)


def _count(text: str) -> int:
    """A whole number of at least 1."""
    if not (text.isascii() and text.isdigit() and len(text) <= 9) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a positive whole number: {text!r}")
    return int(text)


def _duration(text: str) -> float:
    """A duration such as ``7d``, ``12h``, ``30m``, ``90s`` or plain seconds."""
    units = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
    clean = text.strip().lower()
    number, unit = (clean[:-1], clean[-1]) if clean[-1:] in units else (clean, "s")
    try:
        value = float(number) * units[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 7d, 12h)") from None
    if not 0 < value < float("inf"):  # also refuses NaN, which compares false to everything
        raise argparse.ArgumentTypeError(f"duration must be positive and finite: {text!r}")
    return value


def _interval(text: str) -> float:
    """A duration (see :func:`_duration`) of at least one second."""
    value = _duration(text)
    if value < 1.0:
        raise argparse.ArgumentTypeError(f"must be at least 1s: {text!r}")
    return value


def _serve(args: argparse.Namespace) -> int:
    import importlib.util

    missing = [m for m in ("starlette", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:  # the collector extra is not installed
        print(
            f"tomograph serve needs the collector extra ({', '.join(missing)} missing):\n"
            "    pip install 'tomograph-tracing[collector]'",
            file=sys.stderr,
        )
        return 2
    from tomograph.collector import CollectorSettings, serve
    from tomograph.collector.server import CollectorStartError
    from tomograph.collector.span_limits import SpanLimits
    from tomograph.collector.storage import StoreOpenError
    from tomograph.errors import ConfigurationError

    try:
        span_limits = SpanLimits(max_value_length=args.max_value, max_span_length=args.max_span)
    except ValueError as error:
        print(f"tomograph serve: --max-value/--max-span: {error}", file=sys.stderr)
        return 2
    try:
        settings = CollectorSettings(
            host=args.host,
            port=args.port,
            **_database(args.db),
            token=_collector_token(args, "serve"),
            cors_origins=tuple(args.cors_origin or ()),
            max_body_bytes=args.max_body,
            span_limits=span_limits,
            max_age=None if args.keep_forever else args.max_age,
            max_bytes=None if args.keep_forever else args.max_size,
            retention_interval=args.retention_interval,
            query_timeout=args.query_timeout,
            max_concurrent_queries=args.max_concurrent_queries,
        )
        serve(settings)
    except (ConfigurationError, CollectorStartError, StoreOpenError) as error:
        print(f"tomograph serve: {error}", file=sys.stderr)
        return 1
    return 0


def _database(db: str | None) -> dict[str, Any]:
    """``--db`` as collector settings: a PostgreSQL URL, or a SQLite file."""
    from pathlib import Path

    from tomograph.collector.settings import default_db_path, is_postgres_url

    if db and is_postgres_url(db):
        return {"db_url": db}
    return {"db_path": Path(db).expanduser() if db else default_db_path()}


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors in one line that names the command's own help."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_serve(commands: argparse._SubParsersAction[_Parser]) -> None:
    serve = commands.add_parser(
        "serve",
        help="run the Zipkin-compatible collector and web UI (needs the collector extra)",
        description="Receive spans (Zipkin v2 JSON/proto3 on /api/v2/spans, OTLP/HTTP on "
        "/v1/traces), keep them in SQLite or PostgreSQL and show them in a web UI.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=_port, default=9411, help="port to listen on (default 9411)")
    serve.add_argument(
        "--db",
        help="SQLite file (default $XDG_DATA_HOME/tomograph/traces.db), or a"
        " postgresql://user@host/dbname URL shared by several collectors (needs the postgresql"
        " extra; a password is best given in PGPASSWORD or ~/.pgpass)",
        default=None,
    )
    serve.add_argument(
        "--token",
        help="require 'Authorization: Bearer TOKEN' on every API call "
        "(or set TOMOGRAPH_COLLECTOR_TOKEN)",
    )
    serve.add_argument(
        "--cors-origin",
        action="append",
        metavar="ORIGIN",
        help="allow browser pages from ORIGIN to call the API (repeatable; off by default)",
    )
    serve.add_argument(
        "--max-body", type=_size, default=10 << 20, help="largest upload (default 10M)"
    )
    serve.add_argument(
        "--max-value",
        type=_size,
        default=64 << 10,
        help="longest tag or annotation value kept, in characters (default 64K)",
    )
    serve.add_argument(
        "--max-span",
        type=_size,
        default=256 << 10,
        help="largest span kept, in characters (default 256K)",
    )
    serve.add_argument(
        "--max-age", type=_duration, default=7 * 86400.0, help="keep traces this long (default 7d)"
    )
    serve.add_argument(
        "--max-size", type=_size, default=1 << 30, help="cap on the database size (default 1G)"
    )
    serve.add_argument("--keep-forever", action="store_true", help="disable retention")
    serve.add_argument(
        "--retention-interval",
        type=_interval,
        default=60.0,
        help="how often retention runs (default 60s, at least 1s)",
    )
    serve.add_argument(
        "--query-timeout",
        type=_duration,
        default=10.0,
        help="stop a query running longer, answering 503 (default 10s)",
    )
    serve.add_argument(
        "--max-concurrent-queries",
        type=_count,
        default=4,
        metavar="N",
        help="queries run at once; more wait briefly, then get 503 (default 4)",
    )
    serve.set_defaults(handler=_serve, parser=serve)


#: ``tomograph run`` options -> the variable each one sets for the command.
RUN_OPTIONS: dict[str, str] = {
    "service": "TOMOGRAPH_SERVICE",
    "backends": "TOMOGRAPH_BACKENDS",
    "sample_rate": "TOMOGRAPH_SAMPLE_RATE",
    "propagation": "TOMOGRAPH_PROPAGATION",
    "instrument": "TOMOGRAPH_INSTRUMENT",
    "disable": "TOMOGRAPH_DISABLE",
}
#: Exit statuses of a command that cannot be run, as POSIX shells have them.
NOT_EXECUTABLE, NOT_FOUND = 126, 127


def _run(args: argparse.Namespace) -> int:
    """Exec the command with tracing set up in every Python program it starts."""
    import os
    from pathlib import Path

    from tomograph.config import ENV_BACKENDS, run_environment
    from tomograph.integrations import INTEGRATIONS

    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        args.parser.error("missing the command to run, e.g. tomograph run -- python app.py")
    for option in ("instrument", "disable"):
        names = [name.strip().lower() for name in (getattr(args, option) or "").split(",")]
        unknown = sorted({name for name in names if name and name not in INTEGRATIONS})
        if unknown:
            args.parser.error(
                f"--{option}: unknown integration {', '.join(unknown)} "
                f"(known: {', '.join(INTEGRATIONS)})"
            )
    settings = {
        variable: str(getattr(args, option))
        for option, variable in RUN_OPTIONS.items()
        if getattr(args, option) is not None
    }
    bootstrap = str(Path(__file__).resolve().parent / "_bootstrap")
    environment = run_environment(bootstrap, settings)
    if not environment.get(ENV_BACKENDS, "").strip():
        print(
            f"tomograph run: {ENV_BACKENDS} is not set (nor --backends): spans go nowhere; "
            "e.g. --backends zipkin+http://127.0.0.1:9411 for `tomograph serve`",
            file=sys.stderr,
        )
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        # The command replaces this process: same pid, its signals and exit status its own.
        os.execvpe(command[0], command, environment)
    except FileNotFoundError:
        print(f"tomograph run: command not found: {command[0]}", file=sys.stderr)
        return NOT_FOUND
    except OSError as error:
        print(f"tomograph run: cannot run {command[0]}: {error.strerror}", file=sys.stderr)
        return NOT_EXECUTABLE


def _add_run(commands: argparse._SubParsersAction[_Parser]) -> None:
    run = commands.add_parser(
        "run",
        help="run a command with every Python program it starts traced, without code changes",
        usage="tomograph run [options] [--] COMMAND [ARGS...]",
        description="Run COMMAND (python app.py, gunicorn app:app, celery -A proj worker...) "
        "with tracing configured from the TOMOGRAPH_* environment and every supported library "
        "it imports patched. The options set those variables for the command.",
    )
    run.add_argument("--service", help="service name (TOMOGRAPH_SERVICE)")
    run.add_argument(
        "--backends",
        metavar="URLS",
        help="comma-separated backend URLs (TOMOGRAPH_BACKENDS), e.g. zipkin+http://127.0.0.1:9411",
    )
    run.add_argument(
        "--sample-rate",
        metavar="RATE",
        help="fraction of new traces, 0.0 to 1.0 (TOMOGRAPH_SAMPLE_RATE)",
    )
    run.add_argument(
        "--propagation",
        metavar="FORMATS",
        help="trace-context formats, e.g. w3c,b3 (TOMOGRAPH_PROPAGATION)",
    )
    run.add_argument(
        "--instrument",
        metavar="NAMES",
        help="patch only these integrations, e.g. flask,redis (TOMOGRAPH_INSTRUMENT)",
    )
    run.add_argument(
        "--disable",
        metavar="NAMES",
        help="leave these integrations out, e.g. celery (TOMOGRAPH_DISABLE)",
    )
    run.add_argument("command", nargs=argparse.REMAINDER, help="the command and its arguments")
    run.set_defaults(handler=_run, parser=run)


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser (exposed for tests and documentation)."""
    parser = _Parser(prog="tomograph", description="tomograph tracing toolkit")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="run a traced workload across real HTTP services and show its trace",
        description="Start the collector (unless one answers already), run a client calling a "
        "shop that calls an inventory (SQLite) and a payment service over HTTP, send the spans "
        "to the collector, print the trace and its URL, and keep serving until Ctrl-C.",
    )
    demo.add_argument("--no-color", action="store_true", help="plain text output")
    demo.add_argument(
        "--send",
        metavar="URL",
        help="send the trace to this running collector instead, e.g. http://127.0.0.1:9411",
    )
    demo.add_argument(
        "--token",
        help="the collector's token (default: TOMOGRAPH_COLLECTOR_TOKEN), sent as "
        "'Authorization: Bearer TOKEN'",
    )
    demo.add_argument("--port", type=_port, default=9411, help="collector port (default 9411)")
    demo.add_argument("--db", default=None, help="SQLite file of a collector started here")
    demo.add_argument(
        "--no-wait", action="store_true", help="exit after printing instead of serving on"
    )
    demo.add_argument(
        "--offline",
        action="store_true",
        help="no servers: run the workload in-process and print its waterfall only",
    )
    demo.set_defaults(handler=_demo, parser=demo)
    _add_serve(commands)
    _add_run(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tomograph`` console script and ``python -m tomograph``."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # blame the command they were given to, whose help lists its options
        args.parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
