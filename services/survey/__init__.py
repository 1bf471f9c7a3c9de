"""The survey service: records completed anonymous survey responses on the event log.

Each response is its own participant: no participant reference, no contact details and
no free text ever reach the log, only the profile the respondent chose to give.
"""
