"""What a user can cause: one base class, one line each.

Conventions
-----------
* :class:`DeepvisError` is the base of every error a person can cause: a file that is
  not a photo, an unknown layer or class, a setting out of range, weights that cannot be
  had, a saved file of another kind.  Its message is one line that says what to do.
* The CLI and the pages catch only these (and ``OSError``, for files and devices);
  anything else is a bug and shows as one, with its traceback, in the tests.
* It subclasses ``ValueError`` because each of these is a bad value handed in.
"""

from __future__ import annotations


class DeepvisError(ValueError):
    """An error a user caused; ``str()`` is one line."""


def one_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message, or its class name when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
