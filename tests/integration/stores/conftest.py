"""One real PostgreSQL server for the store tests, and a new empty database for every test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.postgres import PostgresServer, running_postgres


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    with running_postgres() as server:
        yield server


@pytest.fixture
def database(postgres: PostgresServer) -> Iterator[str]:
    """The DSN of a database created for this test alone (dropped after it)."""
    dsn = postgres.create_database()
    yield dsn
    postgres.drop_database(dsn)
