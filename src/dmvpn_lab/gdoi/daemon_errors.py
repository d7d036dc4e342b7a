"""Why a GDOI daemon cannot start, in one sentence for the operator (the CLI prints it and exits with 2)."""

from __future__ import annotations


class StartupError(Exception):
    """The daemon cannot start; the message is the whole story for the operator."""
