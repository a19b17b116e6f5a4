"""The version of the scorepack core."""

__version__ = "0.1.0"
