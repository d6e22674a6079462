"""The one exception type for mistakes a user can make (bad file, bad config, missing weights).

The CLI turns it into a single line on stderr and a non-zero exit; library code raises it
with a message that names the file or field and says how to fix it.
"""


class UserError(Exception):
    """A problem the user can fix; ``str(err)`` is the whole message, one line."""


class MethodUnavailable(UserError):
    """A method cannot run here (e.g. its weights are missing); the message says what to do."""
