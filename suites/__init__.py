"""The verification suites users run against a group: ``pytest suites/ --group NAME``.

A package, so its modules (``suites.test_drift``) never collide with the
project's own tests of the same file name in one pytest command.
"""
