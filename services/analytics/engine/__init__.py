"""Running the projection: the one batch engine and what drives it (the live projector, the
rebuild), and the status announcements made after each commit."""
