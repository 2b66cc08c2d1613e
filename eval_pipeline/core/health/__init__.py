"""Pipeline health: incidents when the pipeline fails or falls behind, the freshness rule,
the heartbeat."""
