-- Several judge criteria per trace (quality, groundedness, safety, ...): a score per
-- (day, trace, criterion). Rows written before criteria existed are 'quality'. DuckDB
-- cannot change a primary key in place, so judge_scores is rebuilt; the new column goes
-- last so that positional readers of the old columns keep working.
CREATE TABLE judge_scores_by_criterion (
    partition_date DATE    NOT NULL,
    trace_id       VARCHAR NOT NULL,
    segment        VARCHAR NOT NULL,
    judgment_key   VARCHAR NOT NULL,
    state          VARCHAR NOT NULL,
    score          INTEGER,
    judge_name     VARCHAR NOT NULL,
    judge_model    VARCHAR,
    rubric_version VARCHAR NOT NULL,   -- the criterion's version
    cache_hit      BOOLEAN NOT NULL,
    criterion      VARCHAR NOT NULL DEFAULT 'quality',
    PRIMARY KEY (partition_date, trace_id, criterion)
);
INSERT INTO judge_scores_by_criterion
SELECT partition_date, trace_id, segment, judgment_key, state, score, judge_name, judge_model,
       rubric_version, cache_hit, 'quality'
FROM judge_scores;
DROP TABLE judge_scores;
ALTER TABLE judge_scores_by_criterion RENAME TO judge_scores;

-- Which criterion a cached judgment scored (its key already covers the criterion's version).
ALTER TABLE judgments ADD COLUMN criterion VARCHAR DEFAULT 'quality';

-- The judge's cost per criterion: one line per (day, criterion), next to the day's totals
-- in judge_accounting (which sums these lines). n = cache_hits + judge_calls +
-- same_day_duplicates per criterion; traces without the inputs a criterion needs (no
-- reference answer, no retrieved context) are counted in not_applicable, not in n.
CREATE TABLE judge_accounting_criteria (
    partition_date      DATE    NOT NULL,
    criterion           VARCHAR NOT NULL,
    rubric_version      VARCHAR NOT NULL,
    n                   INTEGER NOT NULL,
    not_applicable      INTEGER NOT NULL,
    cache_hits          INTEGER NOT NULL,
    judge_calls         INTEGER NOT NULL,   -- fresh judgments of this criterion
    same_day_duplicates INTEGER NOT NULL,
    http_attempts       INTEGER NOT NULL,   -- in one-call mode a call's requests count under its first criterion
    ok                  INTEGER NOT NULL,
    unparseable         INTEGER NOT NULL,
    error               INTEGER NOT NULL,
    prompt_tokens       BIGINT  NOT NULL,   -- in one-call mode a call's tokens are split evenly
    completion_tokens   BIGINT  NOT NULL,
    cost_estimate       DOUBLE,
    mean_score          DOUBLE,
    PRIMARY KEY (partition_date, criterion)
);

-- per-criterion: one call per criterion; one-call: all of a trace's criteria in one call.
ALTER TABLE judge_accounting ADD COLUMN criteria_mode VARCHAR DEFAULT 'per-criterion';
ALTER TABLE judge_accounting_criteria ADD COLUMN bad_at_or_below INTEGER;

-- The drift report of every criterion other than quality (whose report stays in
-- drift_reports): per day, criterion and segment ('__all__' = overall), against the same
-- criterion's trailing baseline, with the criterion's own "bad" threshold.
CREATE TABLE drift_reports_criteria (
    partition_date      DATE    NOT NULL,
    criterion           VARCHAR NOT NULL,
    segment             VARCHAR NOT NULL,
    n                   INTEGER NOT NULL,   -- ok judgments
    n_failed            INTEGER NOT NULL,
    failure_rate        DOUBLE,
    mean_score          DOUBLE,
    p10_score           DOUBLE,
    bad_share           DOUBLE,             -- share of scores <= bad_at_or_below
    bad_at_or_below     INTEGER NOT NULL,
    baseline_kind       VARCHAR NOT NULL,
    baseline_days       INTEGER,
    baseline_n          INTEGER,
    baseline_mean       DOUBLE,
    baseline_bad_share  DOUBLE,
    delta               DOUBLE,
    mean_p_value        DOUBLE,
    mean_p_adjusted     DOUBLE,             -- Holm-adjusted over the criterion's segments
    bad_share_p_value   DOUBLE,
    alert               BOOLEAN NOT NULL,
    verdict             VARCHAR NOT NULL,
    judge_name          VARCHAR,
    rubric_version      VARCHAR,
    PRIMARY KEY (partition_date, criterion, segment)
);

-- Incidents per criterion other than quality: the same replay (reference, day test, CUSUM)
-- over the criterion's own score series, rebuilt whole on every run like drift_incidents.
-- Recorded and shown, not notified (notifications and the judge gate follow quality).
CREATE TABLE drift_incidents_criteria (
    criterion        VARCHAR NOT NULL,
    incident_id      VARCHAR NOT NULL,       -- '<criterion>:' + the replay's id
    status           VARCHAR NOT NULL CHECK (status IN ('open', 'resolved')),
    segments         VARCHAR[] NOT NULL,
    opened_on        DATE    NOT NULL,
    detected_on      DATE    NOT NULL,
    last_degraded_on DATE    NOT NULL,
    resolved_on      DATE,
    resolution       VARCHAR,
    detector         VARCHAR NOT NULL,
    reference_mean   DOUBLE,
    current_mean     DOUBLE,
    peak_drop        DOUBLE  NOT NULL,
    current_drop     DOUBLE  NOT NULL,
    computed_at      TIMESTAMP NOT NULL,
    PRIMARY KEY (criterion, incident_id)
);

CREATE TABLE drift_day_states_criteria (
    partition_date  DATE    NOT NULL,
    criterion       VARCHAR NOT NULL,
    segment         VARCHAR NOT NULL,
    state           VARCHAR NOT NULL,
    n               INTEGER NOT NULL,
    n_failed        INTEGER NOT NULL,
    mean_score      DOUBLE,
    reference_mean  DOUBLE,
    drop_points     DOUBLE,
    p_holm          DOUBLE,
    cusum           DOUBLE,
    incident_id     VARCHAR,
    verdict         VARCHAR,
    PRIMARY KEY (partition_date, criterion, segment)
);
