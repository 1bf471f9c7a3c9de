"""What engage measures about itself, in Prometheus's terms: declared once, here.

Each service serves them at ``GET /metrics`` (see ``shared.http``). Labels are routes,
statuses, event types and reasons, never anything about a participant.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# HTTP, every service
HTTP_REQUESTS = Counter("engage_http_requests", "HTTP requests answered.", ["route", "method", "status"])
HTTP_SECONDS = Histogram("engage_http_request_seconds", "Time to answer an HTTP request.", ["route", "method"])

# Writes to the event log (intake, survey)
WRITES = Counter("engage_writes", "Events written to the log, by type and outcome.", ["event_type", "outcome"])
WRITE_SECONDS = Histogram("engage_write_seconds", "Time from a publish to its PubAck.", ["event_type"])
PUBLISH_FAILURES = Counter("engage_publish_failures", "Writes the log did not confirm.", ["reason"])

# The projector (analytics)
PROJECTED = Counter("engage_events_projected", "Events counted by the projector.")
DEAD_LETTERS = Counter("engage_dead_letters", "Events parked on the dead-letter stream.", ["why"])
BATCH_SECONDS = Histogram("engage_batch_seconds", "Time to project and commit one batch.")
LAG_EVENTS = Gauge("engage_projector_lag_events", "Events on the log not yet counted.")
LAG_SECONDS = Gauge("engage_projector_lag_seconds", "How long the oldest event not yet counted has waited.")
PROJECTOR_READY = Gauge("engage_projector_ready", "1 while the projection is counting, 0 while it is stalled.")
PROJECTOR_FAULTS = Counter(
    "engage_projector_faults",
    "Faults the projector met, by kind: healed (consumer_lost, out_of_order, lock_lost), "
    "waited on (standby) or stopped at (gap, log_behind, log_recreated, log_missing).",
    ["fault"],
)
