"""The package version (its own module, so that importing it creates no upward arrow)."""

__version__ = "0.1.0"
