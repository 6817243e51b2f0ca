"""A traced HTTP client process for test_propagation_http.py.

``python propagation_client.py PORT`` calls ``GET /traced`` on 127.0.0.1:PORT inside a client
span carrying baggage, with the context written by ``tomograph.add_trace_info_header`` (formats
from ``TOMOGRAPH_PROPAGATION``), and prints its own span and the server's answer as JSON.
"""

from __future__ import annotations

import json
import sys
import urllib.request

import tomograph
from tomograph.propagation import baggage
from tomograph.reporting.memory import MemoryBackend


def main() -> None:
    port = int(sys.argv[1])
    memory = MemoryBackend()
    tomograph.configure(service="client", backends=[memory])
    with tomograph.span("call server", kind="client") as span:
        baggage.set_baggage("user", "alice smith")
        request = urllib.request.Request(f"http://127.0.0.1:{port}/traced")
        tomograph.add_trace_info_header(request)
        sent = dict(request.header_items())
        with urllib.request.urlopen(request, timeout=10) as response:
            answer = json.loads(response.read())
    client = {
        "trace_id": span.trace_id,
        "span_id": span.span_id,
        "sent": sent,
    }
    json.dump({"client": client, "server": answer}, sys.stdout)


if __name__ == "__main__":
    main()
