-- Incident notifications: one row per (incident, event, channel), the dedup key. A row with
-- status 'sent' is never sent again, whatever re-runs or backfills emit; 'failed' is tried
-- again by the next run (up to a limit); 'suppressed' was never sent on purpose (its day is
-- older than the notify window, so a history backfill does not page; or a resolve for an
-- incident whose opening was never announced on that channel) and `reason` says why.
CREATE TABLE notifications (
    incident_id     VARCHAR   NOT NULL,   -- stable across re-runs; PagerDuty's dedup_key
    event           VARCHAR   NOT NULL,   -- 'opened' | 'resolved' | 'digest:YYYY-MM-DD'
    channel         VARCHAR   NOT NULL CHECK (channel IN ('slack', 'webhook', 'pagerduty')),
    kind            VARCHAR   NOT NULL,   -- 'drift' | 'pipeline'
    day             DATE      NOT NULL,   -- the day the message is about
    status          VARCHAR   NOT NULL CHECK (status IN ('sent', 'failed', 'suppressed')),
    reason          VARCHAR,              -- why suppressed
    attempts        INTEGER   NOT NULL,   -- runs that tried to deliver it (each with the HTTP
                                          -- layer's few quick retries); 0 if never tried
    http_status     INTEGER,              -- of the last attempt
    last_error      VARCHAR,              -- of the last attempt, scrubbed of every secret
    payload         VARCHAR   NOT NULL,   -- the event as JSON (no secrets), to retry it
    first_seen_at   TIMESTAMP NOT NULL,
    last_attempt_at TIMESTAMP,
    sent_at         TIMESTAMP,
    PRIMARY KEY (incident_id, event, channel)
);
