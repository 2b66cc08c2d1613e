"""Arize Phoenix: a day's LLM spans in as traces, judge scores back out as span annotations.

- ``config``: ``PhoenixConfig``, where Phoenix is and which spans are traces, from the
  environment or explicit values;
- ``client``: the HTTP client (bounded retries), the paged span query, the annotation POST;
- ``spans``: a span of Phoenix's REST shape to a trace, a reject or a skip (its OpenInference
  attributes are read by ``core.sources.openinference``);
- ``source``: ``PhoenixSource``, the trace source (prefetch a day, then stage it);
- ``annotations``: judge scores written back as span annotations (plan, send, record).

Import from the module that owns a name; this package re-exports nothing.
"""
