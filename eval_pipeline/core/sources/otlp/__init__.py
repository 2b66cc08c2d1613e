"""The OTLP/HTTP trace receiver: ``decode`` (bodies to spans), ``mapping`` (spans to inbox
records), ``writer`` (durable write-ahead files published into the trace inbox) and
``server`` (the ASGI app and its limits)."""
