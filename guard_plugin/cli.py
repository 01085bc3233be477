"""``harmaug``: the console script.

```
harmaug score TEXT [--response TEXT] [--guard PATH] [--backend onnx|torch]
                       (a cascade's verdict, with the student's own score beside it; a
                       category-aware guard's adds each category's probability and the fired codes)
harmaug serve ...      (guard_plugin.serve, when installed)
harmaug distill ...    (distill.cli: build, evaluate and publish guard versions)
```

Each command module exposes ``register(subparsers)`` adding its parser with
``set_defaults(func=...)``. ``serve`` and ``distill`` are imported only when asked for (or for
``--help``), so ``harmaug score`` starts fast.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import json
import sys
from collections.abc import Sequence

from guard_plugin.bundle import BundleError
from guard_plugin.errors import GuardError

# Commands contributed by other modules: command name -> module with register(subparsers).
LAZY_COMMANDS = {"serve": "guard_plugin.serve", "distill": "distill.cli"}
VERDICT_KEYS = (
    "p_unsafe",
    "unsafe",
    "threshold",
    "guard_version",
    "windows",
    "window_cap_hit",
    "latency_ms",
    "stage",
)
# Added for a guard with category heads: code -> probability, and the codes that fired.
CATEGORY_KEYS = ("categories", "fired")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "score",
        help="score a prompt (and optionally a response) with the guard",
        description="Print one JSON verdict for TEXT (use - to read it from stdin).",
    )
    parser.add_argument("text", metavar="TEXT", help="the prompt; - reads it from stdin")
    parser.add_argument("--response", metavar="TEXT", help="a response to score with the prompt")
    parser.add_argument(
        "--guard",
        metavar="PATH",
        help="guard bundle / Hugging Face directory / registry version (default: HARMAUG_GUARD, "
        "else the registry's champion)",
    )
    parser.add_argument("--backend", choices=["onnx", "torch"], help="override the bundle's")
    parser.add_argument("--threshold", type=float, help="override the bundle's threshold")
    parser.set_defaults(func=run_score)


def run_score(args: argparse.Namespace) -> int:
    from guard_plugin.guard import Guard
    from guard_plugin.settings import GuardSettings

    _quiet_third_party()
    overrides = {"guard": args.guard, "backend": args.backend}
    settings = GuardSettings(**{k: v for k, v in overrides.items() if v is not None})
    prompt = sys.stdin.read() if args.text == "-" else args.text
    guard = Guard.from_settings(settings)

    async def check() -> dict[str, object]:
        try:
            if args.response is None:
                verdict = await guard.check_prompt(prompt, threshold=args.threshold)
            else:
                verdict = await guard.check_completion(
                    prompt, args.response, threshold=args.threshold
                )
        finally:
            await guard.aclose()
        return verdict.to_dict()

    result = asyncio.run(check())
    keys = VERDICT_KEYS + (CATEGORY_KEYS if guard.categories else ())
    shown: dict[str, object] = {key: result[key] for key in keys}
    if guard.model.first_stage is not None:  # a cascade: the student's own figure beside it
        (student,) = guard.model.score([(prompt, args.response)])
        shown["student"] = {
            "p_unsafe": student.p_unsafe,
            "unsafe": student.p_unsafe >= float(result["threshold"]),  # type: ignore[arg-type]
        }
    print(json.dumps(shown))
    return 0


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="harmaug", description="harmaug-guard: a distilled safety guard for LLM gateways"
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    register(subparsers)
    first = next((word for word in argv if not word.startswith("-")), None)
    for name, module_name in LAZY_COMMANDS.items():
        if first is None or first == name or first not in {"score", *LAZY_COMMANDS}:
            _register_lazy(subparsers, name, module_name)
    return parser


def _register_lazy(
    subparsers: argparse._SubParsersAction,  # type: ignore[type-arg]
    name: str,
    module_name: str,
) -> None:
    """Register ``module_name``'s command; a missing optional dependency leaves a stub that says
    what to install; a module that does not exist (yet) is skipped."""
    if importlib.util.find_spec(module_name) is None:
        return
    try:
        module = importlib.import_module(module_name)
        module.register(subparsers)
    except ImportError as exc:
        if name in subparsers.choices:  # the module registered part of its command, then failed
            return
        reason = f"unavailable: {exc}"
        stub = subparsers.add_parser(name, help=reason, add_help=False)
        stub.add_argument("rest", nargs=argparse.REMAINDER)
        stub.set_defaults(func=lambda _args: _unavailable(name, reason))


def _unavailable(name: str, reason: str) -> int:
    print(
        f"harmaug {name}: {reason}; install the extras (pip install 'harmaug-guard[dev]')",
        file=sys.stderr,
    )
    return 2


def _quiet_third_party() -> None:
    """No progress bars or advisory warnings from transformers on the CLI's stderr."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def main(argv: Sequence[str] | None = None) -> int:
    from guard_plugin.logs import configure_logging

    arguments = list(sys.argv[1:] if argv is None else argv)
    configure_logging("WARNING")
    args = build_parser(arguments).parse_args(arguments)
    try:
        return int(args.func(args))
    except (BundleError, GuardError) as exc:  # GuardNotFound is a BundleError
        print(f"harmaug {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
