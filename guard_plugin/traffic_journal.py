"""What a killed gateway lost: per-process counts of acknowledged and settled traffic records.

Each traffic logger keeps two counters in a 16-byte memory-mapped file,
``<home>/traffic-pending/<pid>-<token>.count``: records acknowledged (accepted by ``log``) and
records settled (committed to the store, or dropped and counted as such). A shared file mapping
lives in the kernel's page cache, so the counters outlast a SIGKILL of the process. A clean close
deletes the file. The next logger that starts with the same home reports each file left by a
process that is gone (``traffic_records_lost``: acknowledged minus settled) and deletes it.
"""

from __future__ import annotations

import mmap
import os
import secrets
import struct
from pathlib import Path

from guard_plugin.logs import get_logger

log = get_logger("guard_plugin.traffic_journal")

FOLDER = "traffic-pending"
SUFFIX = ".count"
COUNTERS = struct.Struct("<QQ")  # acknowledged, settled
_open_here: set[Path] = set()  # journals of this process's live loggers


class PendingJournal:
    """This process's counters for one traffic logger."""

    def __init__(self, home: Path) -> None:
        folder = home / FOLDER
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{os.getpid()}-{secrets.token_hex(4)}{SUFFIX}"
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, COUNTERS.size)
            self._map: mmap.mmap | None = mmap.mmap(fd, COUNTERS.size)
        finally:
            os.close(fd)
        _open_here.add(self.path)

    def update(self, acknowledged: int, settled: int) -> None:
        if self._map is not None:
            COUNTERS.pack_into(self._map, 0, acknowledged, settled)

    def close(self) -> None:
        """Everything acknowledged was settled: nothing to report next time."""
        if self._map is None:
            return
        self._map.close()
        self._map = None
        _open_here.discard(self.path)
        self.path.unlink(missing_ok=True)


def report_lost(home: Path) -> int:
    """Log and delete the journals of processes that are gone; the records they lost in all."""
    folder = home / FOLDER
    total = 0
    for path in sorted(folder.glob(f"*{SUFFIX}")) if folder.is_dir() else []:
        if path in _open_here:
            continue
        pid_text = path.name.split("-", 1)[0]
        pid = int(pid_text) if pid_text.isdigit() else -1
        if pid != os.getpid() and _alive(pid):  # another worker of this gateway
            continue
        try:
            acknowledged, settled = COUNTERS.unpack(path.read_bytes()[: COUNTERS.size])
        except (OSError, struct.error):
            acknowledged = settled = 0  # cut short before its first count: nothing acknowledged
        lost = max(acknowledged - settled, 0)
        total += lost
        if lost:
            log.warning(
                "traffic_records_lost",
                records=lost,
                acknowledged=acknowledged,
                pid=pid,
                reason="the process ended before writing them (killed or crashed)",
            )
        path.unlink(missing_ok=True)
    return total


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
