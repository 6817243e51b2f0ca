"""A real statsd daemon (npm ``statsd``) flushing into Graphite's carbon-cache, on loopback.

``with StatsdGraphite(tmp_path) as graphite:`` starts both (about 2 s), ``graphite.statsd_port``
takes UDP metrics, and :meth:`StatsdGraphite.series` reads what carbon wrote to its whisper
files. Installed by scripts/install-system-deps.sh (``graphite-carbon``, ``statsd@0.9.0``).

statsd 0.9 uses its legacy namespace by default: a counter ``a.b`` is stored as
``stats_counts.a.b`` (the count per flush) and ``stats.a.b`` (per second); a timer ``a.b`` as
``stats.timers.a.b.{count,mean,upper,lower,sum,...}``.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path

from support.servers import NPM_PREFIX, BackgroundProcess, free_port, require, wait_for_port

CARBON_CONF = """[cache]
STORAGE_DIR = {root}/storage
LOCAL_DATA_DIR = {root}/storage/whisper
WHITELISTS_DIR = {root}/storage/lists
CONF_DIR = {root}
LOG_DIR = {root}/log
PID_DIR = {root}
USER =
MAX_CACHE_SIZE = inf
MAX_UPDATES_PER_SECOND = inf
MAX_CREATES_PER_MINUTE = inf
LINE_RECEIVER_INTERFACE = 127.0.0.1
LINE_RECEIVER_PORT = {line_port}
ENABLE_UDP_LISTENER = False
PICKLE_RECEIVER_INTERFACE = 127.0.0.1
PICKLE_RECEIVER_PORT = {pickle_port}
CACHE_QUERY_INTERFACE = 127.0.0.1
CACHE_QUERY_PORT = {query_port}
WHISPER_AUTOFLUSH = True
ENABLE_TAGS = False
"""

STORAGE_SCHEMAS = """[default]
pattern = .*
retentions = 1s:1h
"""

STATSD_CONFIG = """{{
  graphitePort: {line_port},
  graphiteHost: "127.0.0.1",
  address: "127.0.0.1",
  port: {udp_port},
  mgmt_address: "127.0.0.1",
  mgmt_port: {mgmt_port},
  flushInterval: 1000,
  backends: ["./backends/graphite"]
}}
"""


class StatsdGraphite:
    """statsd on ``statsd_port`` (UDP) flushing every second into a private carbon-cache."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.statsd_port = free_port(socket.SOCK_DGRAM)
        self.mgmt_port = free_port()
        self.whisper_dir = root / "storage" / "whisper"
        self._stack = ExitStack()

    def __enter__(self) -> StatsdGraphite:
        carbon = require("carbon-cache", "Graphite carbon (apt graphite-carbon)")
        self.whisper_fetch = require("whisper-fetch", "Graphite whisper tools")
        node = require("node", "Node.js for the statsd daemon")
        statsd_dir = NPM_PREFIX / "node_modules" / "statsd"
        require(str(statsd_dir / "stats.js"), "npm statsd@0.9.0")
        line_port, pickle_port, query_port = free_port(), free_port(), free_port()
        for folder in ("storage/whisper", "storage/lists", "log"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        conf = self.root / "carbon.conf"
        conf.write_text(
            CARBON_CONF.format(
                root=self.root,
                line_port=line_port,
                pickle_port=pickle_port,
                query_port=query_port,
            )
        )
        (self.root / "storage-schemas.conf").write_text(STORAGE_SCHEMAS)
        statsd_conf = self.root / "statsd.js"
        statsd_conf.write_text(
            STATSD_CONFIG.format(
                line_port=line_port, udp_port=self.statsd_port, mgmt_port=self.mgmt_port
            )
        )
        self.carbon = self._stack.enter_context(
            BackgroundProcess(
                [
                    carbon,
                    f"--config={conf}",
                    f"--pidfile={self.root / 'carbon.pid'}",
                    "--nodaemon",
                    "start",
                ],
                self.root / "carbon.out",
            )
        )
        try:
            wait_for_port(line_port)
            self.statsd = self._stack.enter_context(
                BackgroundProcess(
                    [node, "stats.js", str(statsd_conf)], self.root / "statsd.out", cwd=statsd_dir
                )
            )
            wait_for_port(self.mgmt_port)
        except BaseException:
            self._stack.close()
            raise
        return self

    def management(self, command: str) -> str:
        """Ask statsd's management port (``counters``, ``timers``, ``stats``)."""
        with socket.create_connection(("127.0.0.1", self.mgmt_port), timeout=5) as sock:
            sock.sendall(command.encode() + b"\n")
            sock.shutdown(socket.SHUT_WR)
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
                if b"END" in chunk:
                    break
        return b"".join(chunks).decode()

    def series(self, metric: str) -> list[float]:
        """The non-null values carbon stored for ``metric`` (dotted name) in the last hour."""
        path = self.whisper_dir.joinpath(*metric.split(".")).with_suffix(".wsp")
        if not path.exists():
            return []
        output = subprocess.run(
            [self.whisper_fetch, "--json", "--from", str(int(time.time()) - 3600), str(path)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return [value for value in json.loads(output)["values"] if value is not None]

    def wait_for_series(self, metric: str, timeout: float = 15.0) -> list[float]:
        """Wait until ``metric`` has at least one stored value."""
        deadline = time.monotonic() + timeout
        while True:
            values = self.series(metric)
            if values or time.monotonic() > deadline:
                return values
            time.sleep(0.25)

    def wait_for_total(self, metric: str, total: float, timeout: float = 15.0) -> list[float]:
        """Wait until ``metric``'s stored values add up to at least ``total``.

        Values sent together may land in different statsd flush intervals, so one stored
        point is not yet the whole count.
        """
        deadline = time.monotonic() + timeout
        while True:
            values = self.series(metric)
            if sum(values) >= total or time.monotonic() > deadline:
                return values
            time.sleep(0.25)

    def metric_names(self) -> list[str]:
        """Every metric carbon created so far, dotted."""
        return sorted(
            ".".join(path.relative_to(self.whisper_dir).with_suffix("").parts)
            for path in self.whisper_dir.rglob("*.wsp")
        )

    def __exit__(self, *exc_info: object) -> None:
        self._stack.close()
        shutil.rmtree(self.root / "storage", ignore_errors=True)
