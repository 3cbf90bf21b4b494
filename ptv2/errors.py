"""The one exception type users see as a single clear line."""


class UserError(Exception):
    """A problem the user can fix (bad config, missing data or weights); printed as one line, exit 2."""
