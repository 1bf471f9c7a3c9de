"""Analyst exports: the log replayed in memory, written as tables and a data dictionary."""
