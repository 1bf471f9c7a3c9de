"""Survey platforms that push submissions in their own format: KoboToolbox, REDCap, signed webhooks.

Each source is configured in ``ENGAGE_SOURCES_FILE`` (its kind, its mapping file, where its
secrets are) and has its own route under ``/sources/{name}/``. A mapping file says which of the
platform's fields is which profile question and which choice code is which category; anything
it does not map is refused, never guessed, and fields it lists under ``ignore`` (names, phone
numbers, the platform's metadata) are dropped before anything is stored or logged.
"""
