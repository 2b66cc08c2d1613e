-- Days whose raw rows (raw_traces, trace_rejects) the retention has dropped. Everything
-- derived from them (sample, judgments, reports, incidents, feedback, golden set) is kept;
-- this row is how a later run that needs the raw day learns it is gone, and where to.
CREATE TABLE raw_trace_retention (
    partition_date  DATE      NOT NULL PRIMARY KEY,
    rows_dropped    BIGINT    NOT NULL,
    rejects_dropped BIGINT    NOT NULL,
    archive_path    VARCHAR,            -- folder of the day's Parquet archive; NULL: none kept
    dropped_at      TIMESTAMP NOT NULL
);
