-- A/B prompt comparisons: one row per run, per comparison (variant vs baseline, per outcome
-- family), per case and variant, and per pairwise-judged case.

CREATE TABLE ab_runs (
    run_id          VARCHAR   PRIMARY KEY,
    started_at      TIMESTAMP NOT NULL,   -- UTC
    finished_at     TIMESTAMP NOT NULL,
    cases_file      VARCHAR,
    cases_version   VARCHAR,              -- content hash of the cases (cases.golden_version)
    n_cases         INTEGER   NOT NULL,
    baseline        VARCHAR   NOT NULL,   -- the variant every other one is compared with
    variants        JSON      NOT NULL,   -- [{name, label, runner_kind, target, prompt_file, prompt_sha256}]
    judge_name      VARCHAR,
    judge_model     VARCHAR,
    rubric_version  VARCHAR,
    pairwise_judge  VARCHAR,              -- NULL when pairwise judging was not asked for
    min_effect      DOUBLE    NOT NULL,   -- fraction of the outcome's range
    alpha           DOUBLE    NOT NULL,
    seed            INTEGER   NOT NULL,
    verdict         VARCHAR   NOT NULL,   -- headline for the first challenger vs the baseline
    report_md       VARCHAR   NOT NULL    -- the full report as shown in the UI
);

-- One row per (run, challenger variant, family): family is 'scores' (1-5 judge scores,
-- paired t + Wilcoxon), 'pass_fail' (rules graders, McNemar exact) or 'pairwise'.
CREATE TABLE ab_comparisons (
    run_id          VARCHAR NOT NULL,
    variant         VARCHAR NOT NULL,
    baseline        VARCHAR NOT NULL,
    family          VARCHAR NOT NULL CHECK (family IN ('scores', 'pass_fail', 'pairwise')),
    n               INTEGER NOT NULL,     -- cases in the paired analysis
    n_excluded      INTEGER NOT NULL,     -- dropped from both arms (judge/run/grader failure)
    value_a         DOUBLE,               -- mean score, pass rate, or win rate of the baseline
    value_b         DOUBLE,
    delta           DOUBLE,               -- B - A (pairwise: net preference for B)
    ci_low          DOUBLE,
    ci_high         DOUBLE,
    p_value         DOUBLE,               -- t-test / McNemar exact / sign test, raw
    p_adjusted      DOUBLE,               -- Holm over the run's comparisons
    rank_p_value    DOUBLE,               -- Wilcoxon signed-rank (scores only)
    rank_p_adjusted DOUBLE,
    effect_size     DOUBLE,               -- Cohen's d_z (scores only)
    floor           DOUBLE  NOT NULL,     -- the practical floor in the family's units
    needed_n        INTEGER,              -- cases for 80% power at the floor, when not significant
    verdict         VARCHAR NOT NULL,
    explanation     VARCHAR NOT NULL,
    details         JSON    NOT NULL,     -- every figure of the comparison
    PRIMARY KEY (run_id, variant, family)
);

CREATE TABLE ab_case_scores (
    run_id       VARCHAR NOT NULL,
    case_id      VARCHAR NOT NULL,
    variant      VARCHAR NOT NULL,
    family       VARCHAR NOT NULL CHECK (family IN ('scores', 'pass_fail')),
    state        VARCHAR NOT NULL CHECK (state IN ('ok', 'run_error', 'judge_error', 'grader_error')),
    output       VARCHAR,              -- the answer (NULL when the call failed)
    score        DOUBLE,               -- 1-5 for 'scores', 1/0 for 'pass_fail'; NULL unless ok
    passed       BOOLEAN,
    reason       VARCHAR NOT NULL,     -- grader/judge reason, or why there is no score
    judgment_key VARCHAR,              -- into the judgments cache, for judged cases
    latency_ms   DOUBLE,
    PRIMARY KEY (run_id, case_id, variant)
);

CREATE TABLE ab_pairwise (
    run_id    VARCHAR NOT NULL,
    case_id   VARCHAR NOT NULL,
    variant   VARCHAR NOT NULL,       -- the challenger; the other side is the baseline
    pick_ab   VARCHAR,                -- baseline shown first: 'A' | 'B' | 'tie' | NULL (failed)
    pick_ba   VARCHAR,                -- challenger shown first, mapped back to A/B
    outcome   VARCHAR NOT NULL,       -- 'A', 'B', 'tie', 'inconsistent' or 'failed'
    reason    VARCHAR,
    PRIMARY KEY (run_id, case_id, variant)
);
