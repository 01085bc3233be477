"""Traffic stores: where the gateway logs what it screened, and where retraining reads it back.

``open_store(URL)`` opens one by URL:

| URL                                        | store                                              |
|--------------------------------------------|----------------------------------------------------|
| ``/path/traffic.sqlite``, ``sqlite:///P``  | :class:`SQLiteTrafficStore` (embedded default)     |
| ``postgresql://...?schema=NAME``           | :class:`PostgresTrafficStore` (fleets of replicas) |
| ``litellm-spendlogs+postgresql://...``     | :class:`SpendLogSource` (read-only, LiteLLM's own) |
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from adapters.traffic.protocol import StoreUnavailable, TrafficRecord, TrafficStore
from adapters.traffic.sqlite import SQLiteTrafficStore

SPEND_LOGS_PREFIX = "litellm-spendlogs+"


def _split_schema(url: str) -> tuple[str, str | None]:
    """Take the ``schema=`` query parameter (ours, not libpq's) out of a Postgres URL."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query)
    schema = next((value for key, value in query if key == "schema"), None)
    rest = urlencode([(key, value) for key, value in query if key != "schema"])
    return urlunsplit(parts._replace(query=rest)), schema


def open_store(url: str, *, salt: str | None = None) -> TrafficStore:
    """The traffic store a URL names (see the module docstring). Raises StoreUnavailable."""
    if url.startswith(SPEND_LOGS_PREFIX):
        from adapters.traffic.spend_logs import SpendLogSource

        dsn, schema = _split_schema(url[len(SPEND_LOGS_PREFIX) :])
        return SpendLogSource(dsn, schema=schema or "public", salt=salt)
    if url.startswith(("postgresql://", "postgres://")):
        from adapters.traffic.postgres import DEFAULT_SCHEMA, PostgresTrafficStore

        dsn, schema = _split_schema(url)
        return PostgresTrafficStore(dsn, schema=schema or DEFAULT_SCHEMA)
    if url.startswith("sqlite://"):
        url = url[len("sqlite://") :]
    return SQLiteTrafficStore(url)


__all__ = [
    "SQLiteTrafficStore",
    "StoreUnavailable",
    "TrafficRecord",
    "TrafficStore",
    "open_store",
]
