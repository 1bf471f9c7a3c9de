"""engage's services: intake, survey, analytics, and the `engage` command."""
