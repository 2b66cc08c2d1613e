-- Judge accounting: sampled traces whose (query, answer) was already judged earlier in the
-- same run count here, so n = cache_hits + judge_calls + same_day_duplicates.
ALTER TABLE judge_accounting ADD COLUMN same_day_duplicates INTEGER DEFAULT 0;
