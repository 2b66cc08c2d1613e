-- Arize Phoenix: what the span reader skipped per day, and the delivery state of each judge
-- score written back to Phoenix as a span annotation.

-- Spans the Phoenix source read but did not turn into traces because they are not what the
-- pipeline evaluates (a TOOL/CHAIN span, a child span when only roots are wanted). These are
-- counted, not rejected: rejects (error status, no output, non-text, too large) go to
-- trace_rejects like any source's. One row per day and reason; replaced with the day.
CREATE TABLE phoenix_span_skips (
    partition_date DATE    NOT NULL,
    project        VARCHAR NOT NULL,
    reason         VARCHAR NOT NULL,   -- e.g. 'span kind CHAIN', 'not a root span'
    spans          BIGINT  NOT NULL,
    PRIMARY KEY (partition_date, reason)
);

-- One row per (span, annotation name, identifier): Phoenix's own upsert key, so a re-run
-- updates the row in place exactly as Phoenix updates the annotation in place.
-- status 'sent' = Phoenix accepted it (annotation_id is Phoenix's id); 'failed' = the last
-- attempt failed (error says why) and the next run tries again.
CREATE TABLE phoenix_annotations (
    span_id          VARCHAR   NOT NULL,   -- OTel span id (raw_traces.source_ref)
    name             VARCHAR   NOT NULL,   -- e.g. 'eval_pipeline.quality'
    identifier       VARCHAR   NOT NULL,   -- judge name + model + rubric version
    partition_date   DATE      NOT NULL,
    trace_id         VARCHAR   NOT NULL,
    judgment_key     VARCHAR   NOT NULL,
    state            VARCHAR   NOT NULL,   -- the judgment's state: ok | unparseable | error
    score            DOUBLE,
    label            VARCHAR,
    status           VARCHAR   NOT NULL CHECK (status IN ('sent', 'failed')),
    annotation_id    VARCHAR,              -- Phoenix's id once sent
    http_status      INTEGER,
    error            VARCHAR,
    attempts         INTEGER   NOT NULL,
    first_attempt_at TIMESTAMP NOT NULL,
    last_attempt_at  TIMESTAMP NOT NULL,
    sent_at          TIMESTAMP,
    PRIMARY KEY (span_id, name, identifier)
);
