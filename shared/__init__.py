"""engage's shared contract: event schemas, settings, logging, the bus, auth."""
