"""The scoring entry point in the authors' layout (test/score.py); a package so that the import contracts of
pyproject.toml cover it."""
