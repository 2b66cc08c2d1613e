-- The judge budget: spend per day, judge and purpose; traces left unjudged by the budget;
-- the strata of a budgeted sample (for weighted estimates); what each day's sample can see.

-- One line per (day, judge, purpose): drift (stage 1), drift-follow-up (stage 2), anchors,
-- repeats, ab, gate. Replaced when the same work is re-run that day.
CREATE TABLE judge_spend (
    partition_date DATE      NOT NULL,
    judge          VARCHAR   NOT NULL,   -- name/model/rubric: a budget is per judge identity
    purpose        VARCHAR   NOT NULL,
    calls          INTEGER   NOT NULL,   -- judge calls made (cache hits are free)
    cost           DOUBLE,               -- NULL when the judge has no prices
    recorded_at    TIMESTAMP NOT NULL,
    PRIMARY KEY (partition_date, judge, purpose)
);

-- Sampled traces the budget left unjudged: not a judge failure, not in judge_scores.
CREATE TABLE judge_budget_skips (
    partition_date DATE    NOT NULL,
    trace_id       VARCHAR NOT NULL,
    segment        VARCHAR NOT NULL,
    judge          VARCHAR NOT NULL,
    reason         VARCHAR NOT NULL,
    PRIMARY KEY (partition_date, trace_id)
);

ALTER TABLE judge_accounting ADD COLUMN not_judged_budget INTEGER DEFAULT 0;

-- The stratum of each trace of a budgeted sample (a segment or its risk slice), so
-- estimates weight a trace by stratum_size / judged traces of its stratum.
CREATE TABLE sample_strata (
    partition_date DATE    NOT NULL,
    trace_id       VARCHAR NOT NULL,
    stratum        VARCHAR NOT NULL,
    stratum_size   BIGINT  NOT NULL,
    stage          INTEGER NOT NULL,     -- 1, or 2 for the same-day follow-up
    PRIMARY KEY (partition_date, trace_id)
);

-- Per day and segment ('__all__' = overall): weighted estimate and what the sample can see.
CREATE TABLE sample_power (
    partition_date DATE    NOT NULL,
    segment        VARCHAR NOT NULL,
    n              INTEGER NOT NULL,     -- ok judgments
    n_eff          DOUBLE  NOT NULL,     -- Kish effective sample size of their weights
    population     BIGINT  NOT NULL,
    weighted_mean  DOUBLE,
    weighted_se    DOUBLE,
    reference_sd   DOUBLE,
    reference_n    DOUBLE,
    mde            DOUBLE,               -- smallest drop detectable at 80% power today
    target_drop    DOUBLE,
    n_for_target   INTEGER,              -- judged traces a day that would see target_drop
    cusum_drop     DOUBLE,               -- lasting drop the CUSUM pages on within 5 days
    PRIMARY KEY (partition_date, segment)
);
