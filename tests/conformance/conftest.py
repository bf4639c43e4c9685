"""The conformance suite's fixture: one open backend per kind in ``streamlog.backend.BACKENDS``.

Every test here talks to the views and to ``streamlog.backend`` only, so a
new backend passes the suite by being added to ``BACKENDS``.
"""

from __future__ import annotations

import pytest

from streamlog import backend


@pytest.fixture(params=backend.BACKENDS)
def backend_kind(request) -> str:
    """The name of the backend under test ("local" today)."""
    return request.param


@pytest.fixture
def log(backend_kind, tmp_path):
    """An open backend of kind ``backend_kind`` on fresh storage, closed after the test."""
    b = backend.open_backend(backend_kind, tmp_path / "store")
    yield b
    b.close()
