"""What ``tomograph run`` starts in the programs it runs, through this folder's ``sitecustomize``.

``tomograph run`` puts this folder first on ``PYTHONPATH``; Python runs its ``sitecustomize``
at startup, which runs the one it hides (the user's, the virtualenv's or the distribution's),
then :func:`start`. See ``docs/run.md``.
"""

from __future__ import annotations

import logging

__all__ = ["start"]

_log = logging.getLogger("tomograph")
_started = False


def start() -> None:
    """Patch the integrations ``TOMOGRAPH_INSTRUMENT``/``TOMOGRAPH_DISABLE`` choose, each when
    the program first imports its library. Tracing itself is configured from the environment by
    the first span (or by the program's own ``tomograph.configure()``), so a program that never
    traces starts no thread and imports no backend. Never raises: the program must start."""
    global _started
    if _started:
        return
    _started = True
    try:
        from tomograph import integrations
        from tomograph.config import integrations_from_environment
        from tomograph.errors import ConfigurationError

        try:
            instrument, disable = integrations_from_environment()
        except ConfigurationError as error:
            _log.error("tomograph: %s; no library is patched", error)
            return
        integrations.patch_when_imported(integrations.select(instrument, disable))
    except Exception:
        _log.exception("tomograph: could not set up tracing; the program runs untraced")
