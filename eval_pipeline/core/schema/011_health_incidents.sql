-- Pipeline-health incidents ("watch the watcher"): the pipeline itself failed or fell behind.
-- One row per incident, keyed in practice by (job, scope): a failed run opens one (or extends
-- the open one), the next successful run of the same job and scope resolves it; a day whose
-- drift report is missing after the freshness deadline opens one even if no run was launched.
-- Kept apart from drift_incidents: that table is rebuilt by the drift replay and its columns
-- (segments, detector, drops, cause) are statistics a pipeline failure does not have.
CREATE TABLE health_incidents (
    incident_id     VARCHAR   PRIMARY KEY,  -- 'health-<job>-<scope>-<opened, UTC seconds>'
    kind            VARCHAR   NOT NULL,     -- 'pipeline' (the notifications' kind)
    job             VARCHAR   NOT NULL,     -- the logical job: daily_drift_job, ...
    scope           VARCHAR   NOT NULL,     -- partition key, 'first...last' for a ranged run,
                                            -- the feedback file's hash, or '' (the job)
    day             DATE      NOT NULL,     -- the day it is about (partition day, last day of
                                            -- a range, else the first failure's day): what
                                            -- the notify window compares with today
    reason          VARCHAR   NOT NULL CHECK (reason IN ('failure', 'missing')),
    status          VARCHAR   NOT NULL CHECK (status IN ('open', 'resolved')),
    opened_at       TIMESTAMP NOT NULL,
    last_failure_at TIMESTAMP NOT NULL,
    failures        INTEGER   NOT NULL,     -- failed runs (or freshness misses) while open
    step            VARCHAR,                -- the failing step of the latest failed run
    error           VARCHAR   NOT NULL,     -- first line of the error, secrets scrubbed
    run_id          VARCHAR,                -- the latest failed run (NULL: none launched)
    run_url         VARCHAR,                -- link to it in the UI, when a base URL is set
    paged           BOOLEAN   NOT NULL,     -- its 'opened' notification was emitted
    resolved_at     TIMESTAMP,
    resolved_by_run VARCHAR,
    resolution      VARCHAR                 -- 'recovered' | 'recovered before paging'
);
