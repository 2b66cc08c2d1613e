-- Judge accounting: one row per judged day (replaced when the day is re-judged), so what
-- judging cost, how much the cache saved and how it failed is one query away.
CREATE TABLE judge_accounting (
    partition_date     DATE      NOT NULL PRIMARY KEY,
    judge_name         VARCHAR   NOT NULL,
    judge_model        VARCHAR,
    rubric_version     VARCHAR   NOT NULL,
    n                  INTEGER   NOT NULL,   -- sampled traces scored
    cache_hits         INTEGER   NOT NULL,   -- answered from the judgments cache
    judge_calls        INTEGER   NOT NULL,   -- judgments asked of the judge this run
    http_attempts      INTEGER   NOT NULL,   -- requests sent (retries and repairs included)
    ok                 INTEGER   NOT NULL,
    unparseable        INTEGER   NOT NULL,
    error              INTEGER   NOT NULL,
    failures_by_kind   JSON      NOT NULL,   -- {"error/timeout": 2, "unparseable/invalid_output": 1}
    prompt_tokens      BIGINT    NOT NULL,   -- this run's calls only (cache hits cost nothing)
    completion_tokens  BIGINT    NOT NULL,
    latency_ms_mean    DOUBLE,               -- per fresh judgment, retries included
    latency_ms_p95     DOUBLE,
    cost_estimate      DOUBLE,               -- NULL when no token prices are configured
    wall_seconds       DOUBLE    NOT NULL,   -- time spent in the judge this run
    judged_at          TIMESTAMP NOT NULL
);
