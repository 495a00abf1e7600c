"""One exception type whose message is a single line that names the fix."""


class MagicTokensError(ValueError):
    """A user-facing error: bad input, missing data, unknown model, bad params.

    The message is one line that says what is wrong and what to do about it;
    the CLI prints it without a traceback.
    """


def require(condition: bool, message: str) -> None:
    """Raise `MagicTokensError(message)` unless `condition` holds."""
    if not condition:
        raise MagicTokensError(message)
