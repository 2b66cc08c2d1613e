-- What a drift cause needs of a judged trace (model, prompt_version, metadata), copied out of
-- raw_traces by the retention before it drops a day, so the causes of later incidents can
-- still compare against that day.
CREATE TABLE retained_trace_dimensions (
    partition_date DATE    NOT NULL,
    trace_id       VARCHAR NOT NULL,
    model          VARCHAR,
    prompt_version VARCHAR,
    metadata       JSON,
    PRIMARY KEY (partition_date, trace_id)
);
