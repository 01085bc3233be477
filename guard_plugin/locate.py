"""Where the guard to serve lives: the registry layout shared with ``distill.registry``.

```
<registry>/versions/<version>/   one guard bundle per version (immutable once written)
<registry>/champion.json         {"version": ..., "history": [...]} replaced atomically
```
"""

from __future__ import annotations

import json
from pathlib import Path

from guard_plugin.bundle import BundleError
from guard_plugin.settings import GuardSettings

CHAMPION_FILE = "champion.json"
VERSIONS_DIR = "versions"

HOW_TO_GET_A_GUARD = (
    "build the default guard with `harmaug distill bootstrap`, or point HARMAUG_GUARD "
    "(or --guard) at a guard bundle or Hugging Face sequence-classification directory"
)


class GuardNotFound(BundleError):
    """No guard where the settings say one should be."""


def champion_version(registry: Path) -> str | None:
    """The champion's version name, or None when the registry has no champion."""
    pointer = registry / CHAMPION_FILE
    try:
        data = json.loads(pointer.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{pointer}: unreadable champion pointer ({exc})") from exc
    version = data.get("version") if isinstance(data, dict) else None
    if not isinstance(version, str) or not version:
        raise BundleError(f"{pointer}: champion pointer names no version")
    return version


def resolve_guard_path(settings: GuardSettings) -> Path:
    """Turn ``settings.guard`` ('champion', a registry version, or a path) into a directory."""
    registry = settings.registry_path()
    target = settings.guard
    if target == "champion":
        version = champion_version(registry)
        if version is None:
            raise GuardNotFound(
                f"no champion guard in the registry {registry}: {HOW_TO_GET_A_GUARD}"
            )
        return registry / VERSIONS_DIR / version
    in_registry = registry / VERSIONS_DIR / target
    if "/" not in target and in_registry.is_dir():
        return in_registry
    path = Path(target).expanduser()
    if path.is_dir():
        return path
    raise GuardNotFound(
        f"guard {target!r} not found (not a directory, nor a version in {registry}): {HOW_TO_GET_A_GUARD}"
    )
