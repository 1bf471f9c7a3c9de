"""Answering: coverage, segments, as-of, over time, representation, suppression and status,
as typed answers that the API, the dashboard, the CLI and the export share."""
