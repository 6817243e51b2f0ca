"""Running the collector: ``tomograph serve`` starts uvicorn with the app of :func:`create_app`."""

from __future__ import annotations

import logging

from tomograph.collector.settings import CollectorSettings

__all__ = ["serve"]


def serve(settings: CollectorSettings) -> None:
    """Serve the collector until interrupted (Ctrl-C or SIGTERM stop it cleanly).

    >>> serve(CollectorSettings(port=9411))  # doctest: +SKIP
    """
    import uvicorn

    from tomograph.collector.app import create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    app = create_app(settings)
    url_host = f"[{settings.host}]" if ":" in settings.host else settings.host
    logging.getLogger("tomograph.collector").info(
        "tomograph collector on http://%s:%d (traces in %s)",
        url_host,
        settings.port,
        settings.db_path,
    )
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        server_header=False,
        proxy_headers=False,
    )
