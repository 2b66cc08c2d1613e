"""`eval-pipeline feedback serve`: run the feedback collector (POST /v1/feedback) with uvicorn.

The bearer token comes from $EVAL_FEEDBACK_TOKEN; files land in $EVAL_FEEDBACK_INBOX. Slow
clients are cut off (header and body timeouts) and concurrency is bounded; see SECURITY.md.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import uvicorn

from eval_pipeline import settings
from eval_pipeline.core.feedback.collector import TOKEN_ENV, create_app
from eval_pipeline.core.receiver import server_config


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
    s.add_argument(
        "--header-timeout",
        type=float,
        default=10.0,
        help="close a connection that has not sent a complete request head within N seconds",
    )
    s.add_argument(
        "--body-timeout",
        type=float,
        default=30.0,
        help="answer 408 when a request body has not arrived within N seconds",
    )
    s.add_argument(
        "--max-connections",
        type=int,
        default=1000,
        help="answer 503 beyond this many open connections",
    )
    s.add_argument(
        "--max-concurrent-posts",
        type=int,
        default=64,
        help="read at most N posts at once; others wait up to 5 s for a slot, then get 503",
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
        body_timeout=args.body_timeout,
        max_concurrent_posts=args.max_concurrent_posts,
    )
    print(
        f"feedback collector on http://{args.host}:{args.port}/v1/feedback -> {inbox}", flush=True
    )
    # uvicorn runs the app's lifespan: on SIGTERM/SIGINT the current file is published.
    config = server_config(
        app,
        args.host,
        args.port,
        header_timeout=args.header_timeout,
        max_connections=args.max_connections,
        log_level="warning",
    )
    uvicorn.Server(config).run()
    return 0
