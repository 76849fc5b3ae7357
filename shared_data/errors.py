"""One exception type for everything a user can fix.

Raised anywhere (data loading, importers, extractors, the harness) and turned by the CLI into a
single line `error: <message>` with exit code 2. The message names the file or value at fault and
what to do about it; a traceback is for bugs, not for bad input.
"""


class UserError(Exception):
    """Bad input or environment: printed as one line, never as a traceback."""
