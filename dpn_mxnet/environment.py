"""Environment variables that MXNet reads during one call, set around that call only: before and after it the
environment is the user's, and a variable the user has set keeps the user's value."""
import contextlib
import os


@contextlib.contextmanager
def defaults(values):
    """``values`` ({name: value}) in ``os.environ`` while the block runs, except names already set there."""
    added = {name: value for name, value in values.items() if name not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)
