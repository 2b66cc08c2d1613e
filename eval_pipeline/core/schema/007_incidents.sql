-- Drift incidents. drift_incidents and drift_day_states are rebuilt as a whole by every run
-- of the drift_incidents asset (a replay of the stored per-day scores), so a re-run of any
-- day reaches every later day. Hand-made acts (acknowledge, resolve, rebaseline) are inputs
-- to that replay and are kept in their own tables, never overwritten.

CREATE TABLE drift_incidents (
    incident_id      VARCHAR PRIMARY KEY,    -- hash of (kind, first day, first segment)
    kind             VARCHAR NOT NULL,       -- 'drift'
    status           VARCHAR NOT NULL CHECK (status IN ('open', 'resolved')),
    segments         VARCHAR[] NOT NULL,     -- '__all__' = the overall row
    opened_on        DATE    NOT NULL,       -- first affected day (CUSUM change-point)
    detected_on      DATE    NOT NULL,       -- the day the alarm fired
    last_degraded_on DATE    NOT NULL,
    resolved_on      DATE,
    resolution       VARCHAR,                -- 'healthy' | 'manual' | 'rebaseline'
    resolved_by      VARCHAR,
    detector         VARCHAR NOT NULL,       -- 'day-test' | 'cusum' | 'cusum+day-test'
    reference_mean   DOUBLE,
    current_mean     DOUBLE,
    peak_drop        DOUBLE  NOT NULL,       -- points below the reference, worst day
    current_drop     DOUBLE  NOT NULL,       -- latest day
    cause_key        VARCHAR,                -- 'prompt_version=v2', or NULL: none named
    cause            VARCHAR NOT NULL,       -- the sentence
    acknowledged_by  VARCHAR,
    acknowledged_at  TIMESTAMP,
    computed_at      TIMESTAMP NOT NULL
);

-- The engine's verdict for every day and segment ('__all__' = overall, mix-standardised).
CREATE TABLE drift_day_states (
    partition_date  DATE    NOT NULL,
    segment         VARCHAR NOT NULL,
    state           VARCHAR NOT NULL,   -- no_verdict | healthy | alarm | degraded | recovering | resolved
    n               INTEGER NOT NULL,
    n_failed        INTEGER NOT NULL,
    mean_score      DOUBLE,
    reference_mean  DOUBLE,
    reference_n     INTEGER,
    reference_days  INTEGER,
    drop_points     DOUBLE,             -- reference_mean - mean (standardised for '__all__')
    z               DOUBLE,             -- drop in standard errors
    p_value         DOUBLE,             -- one-sided, normal
    p_holm          DOUBLE,             -- Holm over the day's rows
    cusum           DOUBLE,
    incident_id     VARCHAR,
    verdict         VARCHAR NOT NULL,
    PRIMARY KEY (partition_date, segment)
);

-- "Accept the new normal": the segment's reference restarts on from_day.
CREATE TABLE drift_rebaselines (
    segment    VARCHAR   NOT NULL,
    from_day   DATE      NOT NULL,
    reason     VARCHAR   NOT NULL,
    created_by VARCHAR   NOT NULL,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (segment, from_day)
);

-- Acknowledgements and hand resolutions, effective on `day`.
CREATE TABLE incident_actions (
    incident_id VARCHAR   NOT NULL,
    action      VARCHAR   NOT NULL CHECK (action IN ('ack', 'resolve')),
    day         DATE      NOT NULL,
    actor       VARCHAR   NOT NULL,
    reason      VARCHAR   NOT NULL,
    acted_at    TIMESTAMP NOT NULL
);

-- The per-day report carries the reference it was judged against and its incident.
ALTER TABLE drift_reports ADD COLUMN reference_mean DOUBLE;
ALTER TABLE drift_reports ADD COLUMN incident_id VARCHAR;
