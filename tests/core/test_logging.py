"""The library's log handler follows sys.stderr (a replaced and closed stream never gets writes)."""

import io
import sys

from trustlab.utils.logging import get_logger, setup_logging


def test_handler_writes_to_the_current_stderr_not_the_one_it_was_created_with():
    old = sys.stderr
    first = io.StringIO()
    sys.stderr = first
    try:
        setup_logging()
        first.close()
        second = io.StringIO()
        sys.stderr = second
        get_logger("x").warning("hello")
    finally:
        sys.stderr = old
    assert "hello" in second.getvalue()
