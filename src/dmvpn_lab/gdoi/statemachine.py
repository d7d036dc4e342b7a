"""Protocol states you can read: aioquic's ``_set_state`` for the engines and their exchanges.

A protocol object's state is an enum changed only through :meth:`StateMachine._set_state`, which logs
every ``old -> new`` transition, so the daemon log reads as the exchanges' progress.  This module is a
leaf (it imports nothing of the project) so that :mod:`.phase1` and the engines can all use it.
"""

from __future__ import annotations

import logging
from enum import Enum
from typing import Generic, TypeVar

_S = TypeVar("_S", bound=Enum)

# A child of the daemon's "dmvpn_lab.gdoi" logger, so transitions appear at its default level (info).
log = logging.getLogger(__name__)


class StateMachine(Generic[_S]):
    """An enum state changed only through :meth:`_set_state`, which logs each transition."""

    def __init__(self, initial: _S) -> None:
        self._state = initial

    @property
    def state(self) -> _S:
        return self._state

    def _set_state(self, new: _S) -> None:
        if new is not self._state:
            if log.isEnabledFor(logging.INFO):  # a key server runs thousands of these: describe only if logged
                log.info("%s: %s -> %s", self._describe(), self._state.name, new.name)
            self._state = new

    def _describe(self) -> str:
        """Who changes state, for the log line: the role and the peers."""
        raise NotImplementedError
