"""The coordinators' live dashboard, served by analytics."""
