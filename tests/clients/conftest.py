"""One `nutq serve` (see `served`) for all client tests, Python and browser: its startup is most of
their time. This directory is a package (`__init__.py`) so that this conftest does not shadow the
top-level `tests/conftest.py`, which other test modules import as `conftest`."""

from __future__ import annotations

import pytest

from tests.clients.served import Served, start_server, stop_server

pytest.importorskip("uvicorn")


@pytest.fixture(scope="session")
def server(tiny_checkpoint, tmp_path_factory) -> Served:
    served = start_server(tiny_checkpoint, tmp_path_factory.mktemp("client-server") / "serve.log")
    yield served
    stop_server(served)
