"""The root of pipedeck's own exceptions."""

from __future__ import annotations


class PipedeckError(Exception):
    """An error pipedeck reports to the user as a message, never as a traceback."""
