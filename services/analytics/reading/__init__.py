"""Reading the event log: the live pull reader, replay windows, and the one decode."""
