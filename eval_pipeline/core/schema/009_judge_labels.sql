-- Trusting the judge: people's scores of judged traces, a frozen anchor set re-judged daily,
-- and what the anchors found. A judge identity is 'name|model|rubric_version'.

-- One person's score of one judged trace, on the judge's own 1-5 scale. A person labels a
-- trace once; labelling it again replaces the earlier label.
CREATE TABLE judge_labels (
    partition_date  DATE      NOT NULL,
    trace_id        VARCHAR   NOT NULL,
    labeller        VARCHAR   NOT NULL,
    human_score     INTEGER   NOT NULL CHECK (human_score BETWEEN 1 AND 5),
    judgment_key    VARCHAR   NOT NULL,   -- the judgment shown for labelling (never its score)
    judge_identity  VARCHAR   NOT NULL,   -- whose judgment it was
    source          VARCHAR   NOT NULL CHECK (source IN ('terminal', 'import', 'review')),
    note            VARCHAR,
    labelled_at     TIMESTAMP NOT NULL,
    PRIMARY KEY (partition_date, trace_id, labeller)
);

-- The anchor set: chosen once, text copied so that it stays fixed whatever happens to
-- raw_traces later.
CREATE TABLE judge_anchor_set (
    anchor_set      VARCHAR   NOT NULL,
    position        INTEGER   NOT NULL,
    partition_date  DATE      NOT NULL,   -- where the trace came from
    trace_id        VARCHAR   NOT NULL,
    user_query      VARCHAR   NOT NULL,
    assistant_response VARCHAR NOT NULL,
    chosen_at       TIMESTAMP NOT NULL,
    PRIMARY KEY (anchor_set, position)
);

-- Every anchor judgment, outside the judgment cache. pass 0 is the day's scoring; passes
-- 1..k are test-retest repeats asked for on that day.
CREATE TABLE judge_anchor_scores (
    run_date        DATE      NOT NULL,
    anchor_set      VARCHAR   NOT NULL,
    judge_identity  VARCHAR   NOT NULL,
    position        INTEGER   NOT NULL,
    pass            INTEGER   NOT NULL,
    state           VARCHAR   NOT NULL CHECK (state IN ('ok', 'unparseable', 'error')),
    score           INTEGER   CHECK (score BETWEEN 1 AND 5),
    reason          VARCHAR   NOT NULL,
    judged_at       TIMESTAMP NOT NULL,
    PRIMARY KEY (run_date, anchor_set, judge_identity, position, pass)
);

-- What re-judging the anchors cost, one line per run and kind, beside judge_accounting.
CREATE TABLE judge_anchor_accounting (
    run_date          DATE      NOT NULL,
    anchor_set        VARCHAR   NOT NULL,
    judge_identity    VARCHAR   NOT NULL,
    kind              VARCHAR   NOT NULL CHECK (kind IN ('anchors', 'retest')),
    judge_calls       INTEGER   NOT NULL,
    http_attempts     INTEGER   NOT NULL,
    prompt_tokens     BIGINT    NOT NULL,
    completion_tokens BIGINT    NOT NULL,
    cost_estimate     DOUBLE,
    wall_seconds      DOUBLE    NOT NULL,
    PRIMARY KEY (run_date, anchor_set, judge_identity, kind)
);

-- One finding per day and judge identity: did today's judge score the anchors like the
-- first scoring by the same identity? judge_drift = TRUE means the judge changed, not the app.
CREATE TABLE judge_drift_findings (
    run_date          DATE      NOT NULL,
    anchor_set        VARCHAR   NOT NULL,
    judge_identity    VARCHAR   NOT NULL,
    baseline_date     DATE,                 -- the identity's first scoring of the anchors
    n_paired          INTEGER   NOT NULL,   -- anchors ok on both days
    baseline_mean     DOUBLE,
    today_mean        DOUBLE,
    mean_shift        DOUBLE,               -- today - baseline, over the paired anchors
    changed_share     DOUBLE,               -- share of paired anchors whose score changed
    test              VARCHAR   NOT NULL,   -- the paired test used
    p_value           DOUBLE,               -- shift test
    spread_p_value    DOUBLE,               -- spread test (NULL: no repeat of the first scoring)
    spread_excess     DOUBLE,               -- mean |today - first| - mean |repeat - first|
    alpha             DOUBLE    NOT NULL,
    effect_floor      DOUBLE    NOT NULL,   -- size needed besides p < alpha / 2
    judge_drift       BOOLEAN   NOT NULL,
    retest_kappa      DOUBLE,               -- test-retest weighted kappa, when repeats ran
    retest_exact      DOUBLE,
    verdict           VARCHAR   NOT NULL,
    created_at        TIMESTAMP NOT NULL,
    PRIMARY KEY (run_date, anchor_set, judge_identity)
);
