"""A real Thrift Scribe server for tests, built with thriftpy2 from the tiny scribe IDL.

The IDL is written into a temp dir at run time; Zipkin's ``zipkinCore.thrift`` is read from the
shared specs folder to decode what arrives back into v1 spans.
"""

from __future__ import annotations

import base64
import socket
import threading
from collections import deque
from pathlib import Path
from typing import Any

from support.servers import SHARED, free_port, wait_for_port

SCRIBE_IDL = """
struct LogEntry {
  1: string category,
  2: string message
}
enum ResultCode {
  OK,
  TRY_LATER
}
service scribe {
  ResultCode Log(1: list<LogEntry> messages);
}
"""

ZIPKIN_CORE = SHARED / "specs" / "zipkin" / "zipkinCore.thrift"


def load_zipkin_core() -> Any:
    """Zipkin's zipkinCore.thrift as a thriftpy2 module."""
    import thriftpy2

    return thriftpy2.load(str(ZIPKIN_CORE), module_name="zipkinCore_thrift")


class ScribeServer:
    """``with ScribeServer(tmp_path) as server:`` serves scribe.Log on ``server.port``.

    ``server.entries`` holds every (category, message) received; ``server.answers`` (a deque of
    ResultCode names) makes the next calls answer ``TRY_LATER`` and so on.
    """

    def __init__(self, directory: Path) -> None:
        import thriftpy2
        from thriftpy2.rpc import make_server
        from thriftpy2.transport import TFramedTransportFactory

        idl = directory / "scribe.thrift"
        idl.write_text(SCRIBE_IDL)
        self.thrift = thriftpy2.load(str(idl), module_name="scribe_thrift")
        self.entries: list[tuple[str, str]] = []
        self.answers: deque[str] = deque()
        self.calls = 0
        self.received = threading.Condition()
        server = self

        class Dispatcher:
            def Log(self, messages: list[Any]) -> int:
                with server.received:
                    server.calls += 1
                    answer = server.answers.popleft() if server.answers else "OK"
                    if answer == "OK":
                        server.entries.extend((m.category, m.message) for m in messages)
                        server.received.notify_all()
                    return int(getattr(server.thrift.ResultCode, answer))

        self.port = free_port()
        self.server = make_server(
            self.thrift.scribe,
            Dispatcher(),
            "127.0.0.1",
            self.port,
            trans_factory=TFramedTransportFactory(),
        )
        self._thread = threading.Thread(target=self.server.serve, daemon=True)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[tuple[str, str]]:
        """Wait until ``count`` entries arrived; the entries so far."""
        with self.received:
            self.received.wait_for(lambda: len(self.entries) >= count, timeout)
            return list(self.entries)

    def spans(self, zipkin_core: Any) -> list[Any]:
        """Every entry's message decoded as a Zipkin v1 thrift Span."""
        from thriftpy2.protocol import TBinaryProtocolFactory
        from thriftpy2.utils import deserialize

        return [
            deserialize(zipkin_core.Span(), base64.b64decode(message), TBinaryProtocolFactory())
            for _, message in self.entries
        ]

    def __enter__(self) -> ScribeServer:
        self._thread.start()
        wait_for_port(self.port)
        return self

    def __exit__(self, *exc_info: object) -> None:
        # Closing the listening socket does not wake a thread blocked in accept(): mark the
        # server closed, wake it with one last connection, then close.
        self.server.closed = True
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            pass
        self._thread.join(timeout=5)
        self.server.close()
