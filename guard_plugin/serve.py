"""``harmaug serve``: the LiteLLM proxy with the harmaug guard, on 127.0.0.1 by default.

Before the proxy starts, the guard is resolved and loaded once here, so a missing or broken guard
stops with a clear message instead of a proxy traceback; with the default guard ('champion') and
no champion in the registry, the default guard is built first (``distill.bootstrap``) unless
``--no-bootstrap``. The proxy then replaces this process (``python -m litellm.proxy.proxy_cli``),
with ``LITELLM_LOCAL_MODEL_COST_MAP=True`` (no network at import) and a master key: the one in
``LITELLM_MASTER_KEY``, or a fresh strong one that is printed.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from collections.abc import MutableMapping
from pathlib import Path

from guard_plugin.bundle import BundleError
from guard_plugin.locate import HOW_TO_GET_A_GUARD, champion_version, resolve_guard_path
from guard_plugin.settings import GuardSettings

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = PACKAGE_ROOT / "examples" / "litellm_config.yaml"
MIN_MASTER_KEY_CHARS = 20


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "serve", help="run the LiteLLM proxy with the harmaug guard (127.0.0.1 by default)"
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG,
        help="LiteLLM proxy config (default: examples/litellm_config.yaml, offline mock models)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=4000, help="port (default 4000)")
    parser.add_argument(
        "--guard",
        default=None,
        help="guard to serve: 'champion', a registry version or a bundle path "
        "(sets HARMAUG_GUARD; default: HARMAUG_GUARD or champion)",
    )
    parser.add_argument(
        "--no-bootstrap",
        action="store_true",
        help="do not build the default guard when the registry has no champion",
    )
    parser.set_defaults(func=serve)


def serve(args: argparse.Namespace) -> int:
    """Check the config and the guard, then exec the LiteLLM proxy. Returns only on failure."""
    config = Path(args.config).expanduser()
    if not config.is_file():
        return _fail(f"proxy config not found: {config}")
    if args.guard:
        os.environ["HARMAUG_GUARD"] = args.guard
    try:
        generated = ensure_master_key(os.environ)
        settings = GuardSettings()
        if settings.guard == "champion" and champion_version(settings.registry_path()) is None:
            if args.no_bootstrap:
                return _fail(
                    f"no champion guard in {settings.registry_path()}: {HOW_TO_GET_A_GUARD}"
                )
            bootstrap_default_guard()
        check_guard_loads(settings)
    except (RuntimeError, ImportError, ValueError) as exc:  # BundleError, BootstrapError ...
        return _fail(str(exc))

    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    os.environ["PYTHONPATH"] = os.pathsep.join(
        part for part in (str(PACKAGE_ROOT), os.environ.get("PYTHONPATH", "")) if part
    )
    if generated:
        print(f"LITELLM_MASTER_KEY={generated}  (generated for this run; set it to keep one key)")
    print(f"harmaug gateway on http://{args.host}:{args.port} (config {config})", flush=True)
    command = [
        sys.executable,
        "-m",
        "litellm.proxy.proxy_cli",
        "--config",
        str(config),
        "--host",
        args.host,
        "--port",
        str(args.port),
    ]
    sys.stderr.flush()
    os.execv(sys.executable, command)
    return 0  # not reached


def ensure_master_key(environ: MutableMapping[str, str]) -> str | None:
    """Make sure ``LITELLM_MASTER_KEY`` holds a strong key; returns the key when generated here.

    Raises ValueError for a key too short to be a secret.
    """
    key = environ.get("LITELLM_MASTER_KEY", "")
    if not key:
        key = environ["LITELLM_MASTER_KEY"] = "sk-harmaug-" + secrets.token_urlsafe(32)
        return key
    if len(key) < MIN_MASTER_KEY_CHARS:
        raise ValueError(f"LITELLM_MASTER_KEY is too short (< {MIN_MASTER_KEY_CHARS} characters)")
    return None


def bootstrap_default_guard() -> None:
    """Build the default guard into the registry (``distill.bootstrap``, imported lazily)."""
    try:
        from distill.bootstrap import bootstrap
    except ImportError as exc:
        raise ImportError(
            f"the registry has no champion guard and the bootstrap step is unavailable ({exc}); "
            f"{HOW_TO_GET_A_GUARD}"
        ) from exc
    print("no champion guard yet: building the default guard (one time)...", flush=True)
    bootstrap()


def check_guard_loads(settings: GuardSettings) -> None:
    """Load the guard once, as the proxy will; raises BundleError with a clear message."""
    from guard_plugin.model import GuardModel

    path = resolve_guard_path(settings)
    try:
        model = GuardModel.load(path, settings)
    except BundleError:
        raise
    except Exception as exc:
        raise BundleError(f"the guard at {path} cannot be loaded: {exc}") from exc
    print(f"guard {model.version} loads from {path}", flush=True)


def _fail(message: str) -> int:
    print(f"harmaug serve: {message}", file=sys.stderr)
    return 2
