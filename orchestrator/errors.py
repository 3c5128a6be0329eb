"""The one error family the CLI turns into a clear message and exit code 2 (never a traceback)."""


class UserError(Exception):
    """A mistake in what the user gave (spec, address, store, sweep name); the message says which."""
