-- Cheap signals on every trace of a day, overall ('__all__') and per segment: no judge.
-- Long format, one row per (day, segment, signal, key), so a new signal is a new row, not
-- a migration. Writers replace a whole day at a time.
CREATE TABLE trace_signals (
    partition_date DATE     NOT NULL,
    segment        VARCHAR  NOT NULL,   -- '__all__' = every segment together
    signal         VARCHAR  NOT NULL,   -- refusal_rate, answer_chars, segment_share, ...
    kind           VARCHAR  NOT NULL CHECK (kind IN ('rate', 'dist', 'mix')),
    key            VARCHAR  NOT NULL,   -- mix: the value (a segment, prompt_version, model); else ''
    n              BIGINT   NOT NULL,   -- rate/mix: denominator; dist: traces with a value
    hits           BIGINT,              -- rate/mix: numerator
    value          DOUBLE,              -- rate/mix: hits / n; dist: median
    p10            DOUBLE,
    p90            DOUBLE,
    mean           DOUBLE,
    bins           BIGINT[],            -- dist: counts on the signal's fixed log binning
    PRIMARY KEY (partition_date, segment, signal, key)
);

-- Every drift test the signals ran on a day (fired or not), so a day's verdicts can be read
-- back and a paged segment-day is kept out of later references. Replaced a day at a time.
CREATE TABLE trace_signal_tests (
    partition_date DATE     NOT NULL,
    segment        VARCHAR  NOT NULL,
    signal         VARCHAR  NOT NULL,
    key            VARCHAR  NOT NULL,
    kind           VARCHAR  NOT NULL,   -- rate | dist | mix | new_value
    test           VARCHAR  NOT NULL,   -- the named test
    pages          BOOLEAN  NOT NULL,   -- configured to page (else it informs)
    fired          BOOLEAN  NOT NULL,   -- significant after Holm AND past its floors
    value          DOUBLE,              -- today: rate, share or median
    reference      DOUBLE,              -- the reference's figure
    effect         DOUBLE,              -- rate/mix: today - reference; dist: PSI
    p_value        DOUBLE,
    p_holm         DOUBLE,
    n              BIGINT,
    reference_n    BIGINT,
    reference_days INTEGER,
    message        VARCHAR  NOT NULL,
    PRIMARY KEY (partition_date, segment, signal, key)
);
