"""`eval-pipeline feedback serve`: run the feedback collector (POST /v1/feedback) with uvicorn.

The bearer token comes from $EVAL_FEEDBACK_TOKEN; files land in $EVAL_FEEDBACK_INBOX.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import uvicorn

from eval_pipeline import settings
from eval_pipeline.core.feedback.collector import TOKEN_ENV, create_app


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("feedback", help="the thumbs up/down feedback collector")
    fsub = p.add_subparsers(dest="feedback_command", metavar="COMMAND")
    s = fsub.add_parser(
        "serve", help="serve POST /v1/feedback (bearer token from $EVAL_FEEDBACK_TOKEN)"
    )
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8077)
    s.add_argument(
        "--inbox", type=Path, default=None, help="feedback inbox (default: $EVAL_FEEDBACK_INBOX)"
    )
    s.add_argument(
        "--rotate-bytes",
        type=int,
        default=1_000_000,
        help="publish the current file when it reaches this size",
    )
    s.add_argument(
        "--rotate-records",
        type=int,
        default=10_000,
        help="publish the current file after this many records",
    )
    s.add_argument(
        "--rotate-seconds",
        type=float,
        default=60.0,
        help="publish the current file when it is this old",
    )
    s.set_defaults(func=serve)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def serve(args: argparse.Namespace) -> int:
    if not os.environ.get(TOKEN_ENV):
        print(f"set {TOKEN_ENV} to the bearer token clients will send")
        return 2
    inbox = args.inbox or settings.feedback_inbox()
    app = create_app(
        inbox,
        max_bytes=args.rotate_bytes,
        max_records=args.rotate_records,
        max_age_seconds=args.rotate_seconds,
    )
    print(
        f"feedback collector on http://{args.host}:{args.port}/v1/feedback -> {inbox}", flush=True
    )
    # uvicorn runs the app's lifespan: on SIGTERM/SIGINT the current file is published.
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
