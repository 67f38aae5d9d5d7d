"""Testing helpers for projects that use pollkit: the pytest plugin
(`pollkit.testing.pytest_plugin`, registered through the ``pytest11`` entry point).
"""
