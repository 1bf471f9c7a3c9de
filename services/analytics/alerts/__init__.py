"""Alerts: announced status changes delivered to coordinators by webhook and e-mail.

``message`` words an alert from what coordinators may see; ``delivery`` sends each alert in
the outbox (``alert_outbox``, filled by ``engine.announce``) once to each destination,
retrying with backoff, beside the projection and never in its way.
"""
