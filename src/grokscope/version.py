"""The package version, in a module of its own so that any layer can read it without importing the public API. The one
place it is written: pyproject.toml reads it from here, and run folders, datasets and reports record it."""

__version__ = "0.2.0"
