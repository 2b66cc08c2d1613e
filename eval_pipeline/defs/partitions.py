import dagster as dg

# A literal start date: the partition set never moves. Days are UTC.
daily_partitions = dg.DailyPartitionsDefinition(start_date="2026-01-01", timezone="UTC")
