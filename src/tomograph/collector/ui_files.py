"""The web UI's static files, served with fixed content types and revalidated on every load.

The UI is native ES modules: a browser runs a module only if it arrives with a JavaScript content
type, and with ``X-Content-Type-Options: nosniff`` it refuses a stylesheet that is not ``text/css``.
The platform's MIME table decides otherwise (on Windows the registry may call ``.js``
``text/plain``), so the types of the UI's own file kinds are fixed here. ``Cache-Control: no-cache``
makes the browser revalidate each file (a cheap 304 by ETag), so after an upgrade a page never runs
a mix of old and new modules.
"""

from __future__ import annotations

import os
from pathlib import PurePath

from starlette.datastructures import Headers
from starlette.responses import FileResponse, Response
from starlette.staticfiles import NotModifiedResponse, StaticFiles
from starlette.types import Scope

__all__ = ["UI_CONTENT_TYPES", "UiFiles"]

#: The content type of each kind of file the UI ships (RFC 9239 names JavaScript text/javascript).
UI_CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
}


class UiFiles(StaticFiles):
    """:class:`StaticFiles` for the UI folder and its subfolders (``lib/``, ``views/``, ...)."""

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        media_type = UI_CONTENT_TYPES.get(PurePath(full_path).suffix.lower())
        response = FileResponse(
            full_path,
            status_code=status_code,
            stat_result=stat_result,
            media_type=media_type,
            headers={"Cache-Control": "no-cache"},
        )
        if self.is_not_modified(response.headers, Headers(scope=scope)):
            return NotModifiedResponse(response.headers)
        return response
