"""Importing tomograph's eventlet support leaves the standard library as it was.

eventlet.wsgi (imported by ``tomograph.eventlet``) puts a green copy of ``http.server`` on the
``http`` package. A process that is not monkey-patched (a test run, an application that
imports ``tomograph.eventlet.api`` for its annotations) then got green threads and sockets
from ``http.server.ThreadingHTTPServer``: requests were never answered and ``shutdown()``
never returned. Each case runs in a child process with a deadline, so a hang fails the test
instead of stopping the run.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SERVE_THREE_REQUESTS = """
    {before}
    import sys
    import threading
    import urllib.request

    import tomograph.eventlet  # noqa: F401 - what is imported is the case

    {server_import}

    class Handler(server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    assert server is sys.modules["http.server"]
    httpd = server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    for _ in range(3):
        url = f"http://127.0.0.1:{{httpd.server_address[1]}}/"
        with urllib.request.urlopen(url, timeout=10) as response:
            print(response.status)
    httpd.shutdown()
    httpd.server_close()
    thread.join(10)
    print("stopped", thread.is_alive())
"""


@pytest.mark.parametrize(
    ("before", "server_import"),
    [
        ("import http.server", "import http.server\n    server = http.server"),
        ("", "import http.server\n    server = http.server"),
        ("", "from http import server"),
    ],
    ids=["imported-before", "imported-after", "from-import-after"],
)
def test_a_threading_http_server_still_serves_after_importing_tomograph_eventlet(
    before: str, server_import: str
) -> None:
    script = SERVE_THREE_REQUESTS.format(before=before, server_import=server_import)
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["204", "204", "204", "stopped", "False"]
