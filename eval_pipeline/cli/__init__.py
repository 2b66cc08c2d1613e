"""`eval-pipeline`: the command line for CI and people.

Each subcommand lives in its own module with a ``register(subparsers)`` function that adds
its parser and sets ``func``; the function returns the process exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Modules under eval_pipeline.cli, one per command group.
COMMAND_MODULES = ["drift", "regress", "review", "feedback", "ab", "phoenix", "judge", "health"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eval-pipeline",
        description="Evaluate an LLM application in production: drift, regression gates, "
        "A/B tests, feedback review.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"eval_pipeline.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
