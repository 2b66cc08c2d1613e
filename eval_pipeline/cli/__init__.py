"""`eval-pipeline`: the command line for CI and people.

Each subcommand lives in its own module with a ``register(subparsers)`` function that adds
its parser and sets ``func``; the function returns the process exit code.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# Modules under eval_pipeline.cli, one per command group.
COMMAND_MODULES = [
    "drift",
    "incidents",
    "regress",
    "review",
    "feedback",
    "ab",
    "phoenix",
    "judge",
    "otlp",
]


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


def _run(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


def main(argv: list[str] | None = None) -> int:
    try:
        try:
            return _run(argv)
        finally:
            sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
    except BrokenPipeError:
        # The reader went away (`eval-pipeline drift | head`): not an error worth a
        # traceback. Point stdout at /dev/null so the exit-time flush stays quiet too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a command killed by it


if __name__ == "__main__":
    sys.exit(main())
