"""User-facing errors.

Every problem caused by user input (an unknown name, a bad path, a malformed file, an impossible
budget) raises :class:`UserError`. The CLI prints it on one line, with the fix, and exits with code 2;
no traceback is shown. Bugs stay ordinary exceptions.
"""

from __future__ import annotations


class UserError(ValueError):
    """An error in what the user asked for, with the fix.

    Args:
        problem: What is wrong, naming the offending value.
        fix: What to do instead (shown after the problem).

    Example:
        >>> str(UserError("no such system 'nadafx'", "did you mean 'nadafd'?"))
        "no such system 'nadafx'; did you mean 'nadafd'?"
    """

    def __init__(self, problem: str, fix: str | None = None) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(problem if not fix else f"{problem}; {fix}")


class MissingExtraError(UserError):
    """An optional dependency is not installed.

    Args:
        package: The import name that failed.
        extra: The trustlab extra that provides it.
    """

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(
            f"optional dependency '{package}' is not installed",
            f"install it with: pip install 'trustlab[{extra}]' (or pip install {package})",
        )


def require(module: str, extra: str):  # noqa: ANN201 - returns a module
    """Import an optional dependency or raise :class:`MissingExtraError` with the install hint."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingExtraError(module.split(".")[0], extra) from exc
