"""`eval-pipeline otlp serve`: the OTLP/HTTP trace receiver (POST /v1/traces) with uvicorn.

The bearer token comes from $EVAL_OTLP_TOKEN; records land in the trace inbox
($EVAL_TRACE_INBOX), where the drift loop's inbox source reads them.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from eval_pipeline import settings
from eval_pipeline.core.sources.openinference import SPAN_KINDS, TraceRules
from eval_pipeline.core.sources.otlp.server import (
    TOKEN_ENV,
    Limits,
    create_app,
    protocol_with_header_timeout,
)


def _attrs(values: list[str] | None, default: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(values) if values else default


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("otlp", help="receive traces from instrumented apps over OTLP/HTTP")
    osub = p.add_subparsers(dest="otlp_command", metavar="COMMAND")
    s = osub.add_parser("serve", help="serve POST /v1/traces (bearer token from $EVAL_OTLP_TOKEN)")
    defaults, limits = TraceRules(), Limits()
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=4318)
    s.add_argument("--inbox", type=Path, default=None, help="default: $EVAL_TRACE_INBOX")
    s.add_argument(
        "--segment-attr", action="append", help=f"repeatable; default {defaults.segment_attrs}"
    )
    s.add_argument(
        "--prompt-version-attr",
        action="append",
        help=f"repeatable; default {defaults.prompt_version_attrs}",
    )
    s.add_argument(
        "--user-attr", action="append", help=f"repeatable; default {defaults.user_id_attrs}"
    )
    s.add_argument(
        "--model-attr", action="append", help=f"repeatable; default {defaults.model_attrs}"
    )
    s.add_argument(
        "--span-kind",
        action="append",
        choices=SPAN_KINDS,
        help="span kinds that are traces (repeatable; default LLM)",
    )
    s.add_argument(
        "--all-spans",
        action="store_true",
        help="child spans too, not only root spans (record ids become <trace>:<span>)",
    )
    s.add_argument("--max-body-bytes", type=int, default=limits.max_body_bytes)
    s.add_argument("--max-spans", type=int, default=limits.max_spans)
    s.add_argument("--max-attribute-chars", type=int, default=limits.max_attribute_chars)
    s.add_argument("--header-timeout", type=float, default=limits.header_timeout_s)
    s.add_argument("--body-timeout", type=float, default=limits.body_timeout_s)
    s.add_argument("--max-in-flight", type=int, default=limits.max_in_flight)
    s.add_argument("--min-free-bytes", type=int, default=limits.min_free_bytes)
    s.add_argument(
        "--publish-seconds",
        type=float,
        default=5.0,
        help="publish a write-ahead file into the inbox when it is this old",
    )
    s.add_argument(
        "--publish-records", type=int, default=100_000, help="... or has this many records"
    )
    s.set_defaults(func=serve)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def serve(args: argparse.Namespace) -> int:
    import uvicorn  # only the serving command needs the server

    if not os.environ.get(TOKEN_ENV):
        print(f"set {TOKEN_ENV} to the bearer token clients will send")
        return 2
    inbox = args.inbox or settings.trace_inbox()
    defaults = TraceRules()
    rules = TraceRules(
        span_kinds=tuple(args.span_kind) if args.span_kind else defaults.span_kinds,
        root_only=not args.all_spans,
        segment_attrs=_attrs(args.segment_attr, defaults.segment_attrs),
        model_attrs=_attrs(args.model_attr, defaults.model_attrs),
        prompt_version_attrs=_attrs(args.prompt_version_attr, defaults.prompt_version_attrs),
        user_id_attrs=_attrs(args.user_attr, defaults.user_id_attrs),
    )
    limits = Limits(
        max_body_bytes=args.max_body_bytes,
        max_spans=args.max_spans,
        max_attribute_chars=args.max_attribute_chars,
        header_timeout_s=args.header_timeout,
        body_timeout_s=args.body_timeout,
        max_in_flight=args.max_in_flight,
        min_free_bytes=args.min_free_bytes,
    )
    app = create_app(
        inbox,
        rules=rules,
        limits=limits,
        max_file_records=args.publish_records,
        max_age_s=args.publish_seconds,
    )
    print(f"otlp receiver on http://{args.host}:{args.port}/v1/traces -> {inbox}", flush=True)
    # uvicorn runs the app's lifespan: recovery at start, every file published on SIGTERM.
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        http=protocol_with_header_timeout(args.header_timeout),
        h11_max_incomplete_event_size=64 * 1024,
    )
    return 0
