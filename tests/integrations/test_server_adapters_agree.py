"""Every HTTP server adapter records the same span for the same request (server_adapters_agree.py).

The cases start eventlet, Tornado and uvicorn servers on threads of this interpreter; eventlet's
cannot be stopped from another thread: they run in a pytest process of their own.
"""

from __future__ import annotations

from pathlib import Path

from support.isolated import run_cases_in_a_process_of_their_own


def test_every_adapter_records_the_same_span() -> None:
    run_cases_in_a_process_of_their_own(Path(__file__).with_name("server_adapters_agree.py"))
