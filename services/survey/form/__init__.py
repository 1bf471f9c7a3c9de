"""The participants' survey form: ``GET /form`` and ``POST /form``, plain HTML, no JavaScript needed.

Anonymous, in the languages of the catalogs under ``locale/`` (a new language is a new
catalog, no code), with a quick exit on every page, no cookies, and nothing about the
person's connection (address, browser) kept or logged. A response is recorded through the
very function ``POST /responses`` uses.
"""

from services.survey.form.routes import form_router

__all__ = ["form_router"]
