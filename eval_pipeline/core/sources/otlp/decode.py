"""OTLP/HTTP trace request bodies: content type, gzip, protobuf or JSON, to flat spans.

Decoding is done by the official ``opentelemetry-proto`` messages (protobuf's own parser,
and ``json_format`` for the proto3 JSON mapping). The one OTLP departure from that mapping
is handled here: trace and span ids are hex strings in OTLP/JSON, not base64.

Every failure is a ``BadRequest`` with the HTTP status to answer and a reason; nothing a
client sends raises anything else.
"""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
TRUNCATION_MARK = "…[truncated by eval-pipeline otlp: {n} chars]"


class BadRequest(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def media_type(content_type: str | None) -> str | None:
    """``application/x-protobuf`` or ``application/json`` (parameters ignored), else None."""
    base = (content_type or "").split(";", 1)[0].strip().lower()
    return base if base in (PROTOBUF, JSON) else None


def decompress(body: bytes, encoding: str | None, max_bytes: int) -> bytes:
    """The body after its Content-Encoding (identity or gzip), at most ``max_bytes``."""
    enc = (encoding or "identity").strip().lower()
    if enc in ("", "identity"):
        return body
    if enc != "gzip":
        raise BadRequest(415, f"unsupported Content-Encoding {enc!r} (use gzip or none)")
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, max_bytes + 1)
    except zlib.error as exc:
        raise BadRequest(400, f"body is not valid gzip: {exc}") from None
    if len(out) > max_bytes or inflater.unconsumed_tail:
        raise BadRequest(413, f"decompressed body larger than {max_bytes} bytes")
    if not inflater.eof:
        raise BadRequest(400, "body is not valid gzip: truncated stream")
    return out


_ID_KEYS = {"traceId": 16, "trace_id": 16, "spanId": 8, "span_id": 8}
_ID_KEYS |= {"parentSpanId": 8, "parent_span_id": 8}


def _hex_ids_to_base64(obj: Any) -> Any:
    """OTLP/JSON ids are hex; proto3 JSON ``bytes`` are base64. Convert in place."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key in _ID_KEYS and isinstance(value, str):
                if value == "":
                    continue
                try:
                    raw = bytes.fromhex(value)
                except ValueError:
                    raise BadRequest(400, f"{key} {value[:40]!r} is not hex") from None
                if len(raw) != _ID_KEYS[key]:
                    raise BadRequest(400, f"{key} must be {_ID_KEYS[key]} bytes of hex")
                obj[key] = base64.b64encode(raw).decode()
            else:
                _hex_ids_to_base64(value)
    elif isinstance(obj, list):
        for item in obj:
            _hex_ids_to_base64(item)
    return obj


def parse_request(body: bytes, media: str) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    if media == PROTOBUF:
        try:
            request.ParseFromString(body)
        except (DecodeError, RuntimeError, ValueError) as exc:
            raise BadRequest(400, f"body is not an OTLP ExportTraceServiceRequest: {exc}") from None
        return request
    try:
        obj = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(400, f"body is not JSON: {exc}") from None
    except RecursionError:
        raise BadRequest(400, "body is not OTLP/JSON: nested too deeply") from None
    if not isinstance(obj, dict):
        raise BadRequest(400, "body is not an OTLP/JSON object")
    try:
        obj = _hex_ids_to_base64(obj)
        json_format.ParseDict(obj, request, ignore_unknown_fields=True)
    except (json_format.ParseError, binascii.Error, RecursionError) as exc:
        raise BadRequest(
            400, f"body is not an OTLP/JSON ExportTraceServiceRequest: {exc}"
        ) from None
    return request


def encode_response(media: str, rejected: int, message: str) -> bytes:
    response = ExportTraceServiceResponse()
    if rejected or message:
        response.partial_success.rejected_spans = rejected
        response.partial_success.error_message = message
    if media == JSON:
        return json_format.MessageToJson(response, indent=None).encode()
    return response.SerializeToString()


# --- attributes ---------------------------------------------------------------------------


@dataclass
class Truncation:
    max_chars: int
    keys: list[str] = field(default_factory=list)


def _value(v: AnyValue, key: str, trunc: Truncation, depth: int = 0) -> Any:
    which = v.WhichOneof("value")
    if which == "string_value":
        s = v.string_value
        if len(s) > trunc.max_chars:
            trunc.keys.append(key)
            return s[: trunc.max_chars] + TRUNCATION_MARK.format(n=len(s))
        return s
    if which in ("bool_value", "int_value", "double_value"):
        return getattr(v, which)
    if depth > 8:  # deeper nesting carries nothing a trace uses
        return None
    if which == "array_value":
        return [_value(x, key, trunc, depth + 1) for x in v.array_value.values]
    if which == "kvlist_value":
        return {
            kv.key: _value(kv.value, f"{key}.{kv.key}", trunc, depth + 1)
            for kv in v.kvlist_value.values
        }
    if which == "bytes_value":
        return base64.b64encode(v.bytes_value[: trunc.max_chars]).decode()
    return None


def attributes(kvs: Any, trunc: Truncation) -> dict[str, Any]:
    """OTLP KeyValue list to a dict; strings longer than the limit truncated and marked."""
    return {kv.key: _value(kv.value, kv.key, trunc) for kv in kvs}


@dataclass
class FlatSpan:
    """One span with what the mapping needs, ids as hex."""

    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    start_ns: int
    end_ns: int
    status_code: int  # 0 unset, 1 ok, 2 error
    status_message: str
    attributes: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]]
    resource: dict[str, Any]
    truncated: list[str]


def iter_spans(request: ExportTraceServiceRequest, max_attr_chars: int) -> Iterator[FlatSpan]:
    for rs in request.resource_spans:
        rtrunc = Truncation(max_attr_chars)
        resource = attributes(rs.resource.attributes, rtrunc)
        for ss in rs.scope_spans:
            for span in ss.spans:
                trunc = Truncation(max_attr_chars)
                attrs = attributes(span.attributes, trunc)
                events = [(e.name, attributes(e.attributes, trunc)) for e in span.events]
                yield FlatSpan(
                    trace_id=span.trace_id.hex(),
                    span_id=span.span_id.hex(),
                    parent_span_id=span.parent_span_id.hex(),
                    name=span.name,
                    start_ns=span.start_time_unix_nano,
                    end_ns=span.end_time_unix_nano,
                    status_code=span.status.code,
                    status_message=span.status.message,
                    attributes=attrs,
                    events=events,
                    resource=resource,
                    truncated=trunc.keys,
                )


def count_spans(request: ExportTraceServiceRequest) -> int:
    return sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
