-- Judge criteria in the golden-set gate: per case, the outcome and score of each criterion
-- the case names; per run, each criterion's counts, pass rate and mean score. Both JSON
-- text, NULL when the golden set names no criteria.
ALTER TABLE regression_results ADD COLUMN criteria VARCHAR;
ALTER TABLE regression_runs ADD COLUMN criteria VARCHAR;
