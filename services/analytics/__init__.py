"""analytics: projects the event log into participation and representation counts."""
