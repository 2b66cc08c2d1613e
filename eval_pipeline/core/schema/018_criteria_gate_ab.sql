-- Judge criteria in the golden-set gate: per case, the outcome and score of each criterion
-- the case names; per run, each criterion's counts, pass rate and mean score. Both JSON
-- text, NULL when the golden set names no criteria.
ALTER TABLE regression_results ADD COLUMN criteria VARCHAR;
ALTER TABLE regression_runs ADD COLUMN criteria VARCHAR;

-- Judge criteria in the A/B test, written only when a run judges several: one paired score
-- comparison per (challenger, criterion), Holm-adjusted with the run's other tests, and the
-- per-criterion score of every judged answer. ab_comparisons' 'scores' row and
-- ab_case_scores keep the judge's first criterion, as before.
CREATE TABLE ab_criterion_comparisons (
    run_id          VARCHAR NOT NULL,
    variant         VARCHAR NOT NULL,
    baseline        VARCHAR NOT NULL,
    criterion       VARCHAR NOT NULL,
    n               INTEGER NOT NULL,
    n_excluded      INTEGER NOT NULL,
    value_a         DOUBLE,               -- mean score of the baseline
    value_b         DOUBLE,
    delta           DOUBLE,               -- B - A
    ci_low          DOUBLE,
    ci_high         DOUBLE,
    p_value         DOUBLE,               -- paired t-test, raw
    p_adjusted      DOUBLE,               -- Holm over the run's comparisons and criteria
    rank_p_value    DOUBLE,               -- Wilcoxon signed-rank
    rank_p_adjusted DOUBLE,
    effect_size     DOUBLE,               -- Cohen's d_z
    floor           DOUBLE  NOT NULL,
    needed_n        INTEGER,
    verdict         VARCHAR NOT NULL,
    explanation     VARCHAR NOT NULL,
    details         JSON    NOT NULL,
    PRIMARY KEY (run_id, variant, criterion)
);

CREATE TABLE ab_criterion_scores (
    run_id       VARCHAR NOT NULL,
    case_id      VARCHAR NOT NULL,
    variant      VARCHAR NOT NULL,
    criterion    VARCHAR NOT NULL,
    state        VARCHAR NOT NULL,
    score        DOUBLE,               -- 1-5; NULL unless ok
    reason       VARCHAR NOT NULL,
    judgment_key VARCHAR,
    PRIMARY KEY (run_id, case_id, variant, criterion)
);
