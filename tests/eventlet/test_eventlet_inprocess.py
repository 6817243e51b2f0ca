"""tomograph.eventlet pieces that need no monkey-patching (eventlet_inprocess_cases.py).

The cases run eventlet green threads on the main thread, which gives it an eventlet hub for
the rest of the process: they run in a pytest process of their own.
"""

from __future__ import annotations

from pathlib import Path

from support.isolated import run_cases_in_a_process_of_their_own


def test_eventlet_pieces_in_a_process_of_their_own() -> None:
    run_cases_in_a_process_of_their_own(Path(__file__).with_name("eventlet_inprocess_cases.py"))
