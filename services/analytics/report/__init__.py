"""The participation report: who took part, in the layout of the 2018 report's summary.

Pure (pydantic and the standard library): three coverage answers in (everyone, people with
lived experience, the advisory group), the report's sections out (``participation``), and
those as Markdown, HTML or CSV (``render``). ``engage report`` fetches the answers over
analytics' HTTP API and prints one of them.
"""
