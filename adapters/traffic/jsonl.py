"""JSONL export of a traffic store: one ``TrafficRecord`` per line, oldest first.

```python
count, mark = export_jsonl(open_store("sqlite:///var/harmaug/traffic.sqlite"), "traffic.jsonl")
```

Reads in pages from ``since`` (a watermark of that store) and writes atomically (a temp file
renamed over ``path``), so a reader never sees a half-written export. Returns how many records
were written and the watermark after the last one (pass it as ``since`` for the next export).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from adapters.traffic.protocol import TrafficRecord, TrafficStore


def iter_records(
    store: TrafficStore, since: int = 0, *, page: int = 1000
) -> Iterator[tuple[TrafficRecord, int]]:
    """Every record after ``since``, each with the watermark of the page it came in."""
    mark = since
    while True:
        records, mark = store.read_since(mark, page)
        if not records:
            return
        for record in records:
            yield record, mark


def export_jsonl(
    store: TrafficStore, path: str | Path, since: int = 0, *, page: int = 1000
) -> tuple[int, int]:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    count, mark = 0, since
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            for record, page_mark in iter_records(store, since, page=page):
                handle.write(record.model_dump_json() + "\n")
                count, mark = count + 1, page_mark
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return count, mark
