from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A missing tool (Node, a published server) fails the test that needs it: a skip would be
    counted as a pass. `make test` installs every tool; the reason says how."""
    for marker in item.iter_markers("fail_if_missing"):
        missing = marker.args[0] if marker.args else marker.kwargs.get("condition", False)
        if missing:
            pytest.fail(f"{marker.kwargs.get('reason', 'a required tool is missing')}", pytrace=False)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True, scope="session")
def private_state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Brokers keep state (the approval store) under $XDG_STATE_HOME: never the real home in tests."""
    previous = os.environ.get("XDG_STATE_HOME")
    os.environ["XDG_STATE_HOME"] = str(tmp_path_factory.mktemp("xdg-state"))
    yield
    if previous is None:
        os.environ.pop("XDG_STATE_HOME", None)
    else:
        os.environ["XDG_STATE_HOME"] = previous
