"""The public surface: `__all__` is sorted, complete, and every name has a docstring."""

from __future__ import annotations

import inspect

import pollkit
import pollkit.errors


def test_all_is_sorted_and_exported() -> None:
    assert pollkit.__all__ == sorted(pollkit.__all__)
    for name in pollkit.__all__:
        assert hasattr(pollkit, name), name


def test_every_error_is_exported_from_the_top_level() -> None:
    errors = {
        name
        for name, obj in vars(pollkit.errors).items()
        if inspect.isclass(obj) and issubclass(obj, pollkit.PollkitError)
    }
    assert errors <= set(pollkit.__all__)
    assert sorted(pollkit.errors.__all__) == pollkit.errors.__all__


def test_every_public_class_and_function_has_a_docstring() -> None:
    missing = [
        name
        for name in pollkit.__all__
        if (inspect.isclass(getattr(pollkit, name)) or inspect.isfunction(getattr(pollkit, name)))
        and not inspect.getdoc(getattr(pollkit, name))
    ]
    assert missing == []


def test_errors_are_also_builtin_kinds() -> None:
    assert issubclass(pollkit.ConfigurationError, ValueError)
    assert issubclass(pollkit.PollTimeout, TimeoutError)
    assert issubclass(pollkit.ReadTimeout, TimeoutError)
