"""The browser demo page at `/` and the browser client's files under `/client/` (clients/js).

The files live in the repository's `clients/js` (the browser client is published from there, not
inside the Python package); a server run from a checkout or an editable install serves them, an
installed wheel without them serves no demo and says so once. `nutq serve --no-demo` turns it off.
No route here needs an API key: the files are static, and the page's own WebSocket and HTTP calls
go through the usual authentication.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["CLIENT_DIR", "install_demo"]

log = logging.getLogger(__name__)

CLIENT_DIR = Path(__file__).resolve().parents[3] / "clients" / "js"


def install_demo(app: FastAPI, client_dir: Path = CLIENT_DIR) -> bool:
    """Serve the demo at `/` and `client_dir` at `/client/`; False (and a log line) without the files."""
    index = client_dir / "demo" / "index.html"
    if not index.is_file():
        log.info("no browser demo: %s not found (it ships with the repository's clients/js)", index)
        return False
    app.mount("/client", StaticFiles(directory=client_dir), name="client")

    @app.get("/", include_in_schema=False)
    async def demo_page() -> FileResponse:
        return FileResponse(index, media_type="text/html")

    return True
