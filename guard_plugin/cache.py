"""A small LRU cache of scores keyed by a content hash (chat clients resend their history)."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Generic, TypeVar

T = TypeVar("T")


def content_key(guard_version: str, prompt: str, response: str | None) -> str:
    """sha256 of (guard version, prompt, response); None and "" responses are distinct."""
    digest = hashlib.sha256()
    parts = (guard_version, prompt, "" if response is None else response)
    for part in parts:
        data = part.encode("utf-8", errors="surrogatepass")
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    digest.update(b"\x00" if response is None else b"\x01")
    return digest.hexdigest()


class LRUCache(Generic[T]):
    """Least-recently-used mapping of at most ``size`` entries (0 disables it). Not thread-safe:
    use it from the event loop only."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[str, T] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> T | None:
        value = self._entries.get(key)
        if value is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return value

    def put(self, key: str, value: T) -> None:
        if self.size <= 0:
            return
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()
