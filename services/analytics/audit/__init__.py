"""The suppression auditor: everything a coordinator can see, put together, and every small
count of people it still pins down.

- ``model``: pure: answers in, variables (what each number counts) and the relations between them out;
- ``solve``: the feasible range of each small count, with SciPy's HiGHS (linear programs, then
  integer programs to confirm);
- ``gather``: the answers a token can see, fetched from analytics over HTTP and saved as one file.

``engage audit-suppression`` (``services/cli/audit.py``) runs them.
"""
