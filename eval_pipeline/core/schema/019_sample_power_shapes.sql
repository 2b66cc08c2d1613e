-- What a day's sample can see, per shape of drop: the MDE above is for more broken
-- answers; mde_shift for every answer a little worse (a location shift on the 1-5 scale).
-- reference_tau2: the between-day variance the day test adds (0 when Cochran's Q holds).
ALTER TABLE sample_power ADD COLUMN mde_shift DOUBLE;
ALTER TABLE sample_power ADD COLUMN reference_tau2 DOUBLE;
