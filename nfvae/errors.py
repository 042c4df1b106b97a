"""The base class of errors that are the user's to fix, not bugs.

A missing file, a broken checkpoint, an invalid option: the commands (``nfvae.cli``)
print such an error's message as one paragraph and exit with status 1, without a
traceback. An error class opts in by deriving from ``UserError`` (beside its usual
base: ``class CheckpointError(UserError, RuntimeError)``), so a new module's errors
need no edit of the command-line layer.
"""


class UserError(Exception):
    """An expected error whose message tells the user what to change."""
