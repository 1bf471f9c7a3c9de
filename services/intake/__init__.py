"""intake: the HTTP service coordinators use to schedule and record interviews, gatherings,
advisory group membership and feedback, and participants' withdrawals.

It writes events to the log and keeps one thing of its own: contact details for
scheduling, in a deletable table, never on the log.
"""
