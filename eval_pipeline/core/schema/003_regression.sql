-- Golden-set regression runs: one row per run of the gate, one row per case per run.
-- A run against the same target is compared with the previous completed (pass/fail) run of
-- that target to list cases newly failing / newly passing. Outage runs are kept for the
-- record but are never the "previous run" of a comparison.

CREATE TABLE regression_runs (
    run_id            VARCHAR   PRIMARY KEY,
    deploy_id         VARCHAR   NOT NULL,   -- e.g. the git SHA ($EVAL_DEPLOY_ID, $GITHUB_SHA)
    target            VARCHAR   NOT NULL,   -- base URL#model or module:function (no secrets)
    runner_kind       VARCHAR   NOT NULL,   -- 'http' or 'callable'
    golden_version    VARCHAR   NOT NULL,   -- content hash of the normalised cases
    golden_path       VARCHAR,
    started_at        TIMESTAMP NOT NULL,   -- UTC
    finished_at       TIMESTAMP NOT NULL,
    n_cases           INTEGER   NOT NULL,
    n_passed          INTEGER   NOT NULL,
    n_failed          INTEGER   NOT NULL,   -- wrong answers
    n_errors          INTEGER   NOT NULL,   -- no answer (call failed) or not gradable
    pass_rate         DOUBLE    NOT NULL,   -- n_passed / n_cases
    threshold         DOUBLE    NOT NULL,
    max_error_rate    DOUBLE    NOT NULL,
    status            VARCHAR   NOT NULL CHECK (status IN ('pass', 'fail', 'outage')),
    judge_name        VARCHAR,
    judge_model       VARCHAR,
    rubric_version    VARCHAR,
    judge_mean        DOUBLE,               -- mean judge score of the answers, no reference:
    judge_n           INTEGER,              --   comparable with the drift loop's scores
    previous_run_id   VARCHAR,
    newly_failing     INTEGER,
    newly_passing     INTEGER,
    concurrency       INTEGER,
    duration_s        DOUBLE
);

CREATE TABLE regression_results (
    run_id         VARCHAR NOT NULL,
    case_id        VARCHAR NOT NULL,
    grader         VARCHAR NOT NULL,
    outcome        VARCHAR NOT NULL CHECK (outcome IN ('pass', 'fail', 'error')),
    reason         VARCHAR NOT NULL,
    output         VARCHAR,                 -- the answer (NULL when the call failed)
    call_error     VARCHAR,                 -- why the call failed, if it did
    latency_ms     DOUBLE,
    attempts       INTEGER,
    grade_score    DOUBLE,                  -- e.g. the judge grader's 1-5 score
    judge_score    INTEGER,                 -- the no-reference judge score (baseline scoring)
    tags           JSON,
    PRIMARY KEY (run_id, case_id)
);
