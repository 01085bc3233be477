"""``harmaug distill ...``: one subcommand per pipeline stage, each reading and writing files.

Each stage module owns its command: it exposes ``add_command(subparsers)`` that adds one parser with
``set_defaults(func=...)``; this file only lists them.
"""

from __future__ import annotations

import argparse
import importlib

# Stage modules that contribute a subcommand, in the order `--help` lists them.
STAGE_MODULES = [
    "distill.seeds",
    "distill.harmaug",
    "distill.ordinary_answers",
    "distill.labeling",
    "distill.trainer",
    "distill.evaluation",
    "distill.export",
    "distill.registry",
    "distill.bootstrap",
    "distill.loop",
]


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("distill", help="build, evaluate and publish guard versions")
    stages = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for name in STAGE_MODULES:
        module = importlib.import_module(name)
        module.add_command(stages)


def at_least_one(text: str) -> int:
    """An argparse ``type``: a whole number of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value
