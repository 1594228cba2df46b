"""What the tests share: test photos, bad files, runs of the `shiwu` command, reference models.

Tests import from here (`from support.photos import DATA`), never from another test module.
pyproject.toml's `pythonpath = ["tests"]` makes `support` importable; it is not part of shiwu.
"""
