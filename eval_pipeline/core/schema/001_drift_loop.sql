-- The daily drift loop: traces in, sample, judgments, drift reports, alerts.
-- Every daily table carries partition_date; writers replace a whole day at a time.

CREATE TABLE raw_traces (
    partition_date     DATE      NOT NULL,
    trace_id           VARCHAR   NOT NULL,
    ts                 TIMESTAMP NOT NULL,   -- UTC
    user_query         VARCHAR   NOT NULL,
    assistant_response VARCHAR   NOT NULL,
    segment            VARCHAR,
    model              VARCHAR,
    prompt_version     VARCHAR,
    user_id            VARCHAR,
    metadata           JSON,
    source             VARCHAR   NOT NULL,   -- 'jsonl', 'phoenix', ...
    source_ref         VARCHAR               -- inbox file, span id, ...
    -- No PRIMARY KEY: (partition_date, trace_id) is unique (sources drop duplicates and
    -- ingest_day checks), and an index would cost more than the rest of a large day's ingest.
);

-- Rows a source could not ingest, with where they came from and why.
CREATE TABLE trace_rejects (
    partition_date DATE    NOT NULL,
    source         VARCHAR NOT NULL,
    location       VARCHAR NOT NULL,   -- file path, or URL
    line_no        BIGINT,             -- 1-based line in the file; 0 = the whole file
    reason         VARCHAR NOT NULL,
    excerpt        VARCHAR             -- the first 200 characters of the bad row
);

-- One row per day per source run: how much came in, so a zero-trace day is told apart
-- from a day whose source failed (a failed source raises and writes nothing).
CREATE TABLE trace_ingests (
    partition_date DATE      NOT NULL PRIMARY KEY,
    source         VARCHAR   NOT NULL,
    files_read     INTEGER   NOT NULL,
    rows_seen      BIGINT    NOT NULL,
    rows_ingested  BIGINT    NOT NULL,
    rows_rejected  BIGINT    NOT NULL,
    ingested_at    TIMESTAMP NOT NULL
);

CREATE TABLE sampled_traces (
    partition_date DATE    NOT NULL,
    trace_id       VARCHAR NOT NULL,
    segment        VARCHAR NOT NULL,
    stratum_size   BIGINT  NOT NULL,   -- traces of this segment that day
    stratum_sample BIGINT  NOT NULL,   -- how many of them were sampled
    PRIMARY KEY (partition_date, trace_id)
);

-- The judgment cache: one row per (judge, rubric version, query, response, reference),
-- keyed by a content hash, so nothing already judged is judged again.
CREATE TABLE judgments (
    judgment_key      VARCHAR   PRIMARY KEY,
    judge_name        VARCHAR   NOT NULL,
    judge_model       VARCHAR,
    rubric_version    VARCHAR   NOT NULL,
    state             VARCHAR   NOT NULL CHECK (state IN ('ok', 'unparseable', 'error')),
    score             INTEGER   CHECK (score BETWEEN 1 AND 5),
    reason            VARCHAR   NOT NULL,
    raw_output        VARCHAR,
    prompt_tokens     INTEGER,
    completion_tokens INTEGER,
    latency_ms        DOUBLE,
    attempts          INTEGER,
    judged_at         TIMESTAMP NOT NULL,
    CHECK ((state = 'ok') = (score IS NOT NULL))
);

CREATE TABLE judge_scores (
    partition_date DATE    NOT NULL,
    trace_id       VARCHAR NOT NULL,
    segment        VARCHAR NOT NULL,
    judgment_key   VARCHAR NOT NULL,
    state          VARCHAR NOT NULL,
    score          INTEGER,
    judge_name     VARCHAR NOT NULL,
    judge_model    VARCHAR,              -- NULL for judges with no model (heuristic)
    rubric_version VARCHAR NOT NULL,
    cache_hit      BOOLEAN NOT NULL,
    PRIMARY KEY (partition_date, trace_id)
);

-- Per day and segment ('__all__' = every segment together).
CREATE TABLE drift_reports (
    partition_date      DATE    NOT NULL,
    segment             VARCHAR NOT NULL,
    n                   INTEGER NOT NULL,   -- ok judgments
    n_failed            INTEGER NOT NULL,   -- unparseable + error
    failure_rate        DOUBLE,
    mean_score          DOUBLE,
    p10_score           DOUBLE,
    bad_share           DOUBLE,             -- share of scores <= 2
    baseline_kind       VARCHAR NOT NULL,   -- 'trailing' or 'pinned'
    baseline_days       INTEGER,
    baseline_n          INTEGER,
    baseline_mean       DOUBLE,
    baseline_bad_share  DOUBLE,
    delta               DOUBLE,             -- mean - baseline_mean
    mean_p_value        DOUBLE,             -- one-sided: today lower than baseline
    mean_p_adjusted     DOUBLE,             -- Holm-adjusted over the day's segments
    bad_share_p_value   DOUBLE,             -- one-sided: today's bad share higher
    alert               BOOLEAN NOT NULL,
    verdict             VARCHAR NOT NULL,   -- a sentence a person can read
    judge_name          VARCHAR,
    rubric_version      VARCHAR,
    PRIMARY KEY (partition_date, segment)
);

CREATE TABLE drift_alerts (
    alert_id          VARCHAR   PRIMARY KEY,   -- hash of (day, segment, rule): the dedup key
    partition_date    DATE      NOT NULL,
    segment           VARCHAR   NOT NULL,
    baseline_mean     DOUBLE,
    mean_score        DOUBLE,
    delta             DOUBLE,
    p_value           DOUBLE,             -- Holm-adjusted, as used by the rule
    message           VARCHAR   NOT NULL,
    created_at        TIMESTAMP NOT NULL
);

-- Every delivery attempt. An alert with a 'sent' row is never sent again.
CREATE TABLE alert_deliveries (
    alert_id     VARCHAR   NOT NULL,
    channel      VARCHAR   NOT NULL,   -- 'webhook'
    status       VARCHAR   NOT NULL CHECK (status IN ('sent', 'failed', 'not_configured')),
    http_status  INTEGER,
    error        VARCHAR,
    attempted_at TIMESTAMP NOT NULL
);
