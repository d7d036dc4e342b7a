"""How a configuration reader reports trouble: one located error, or a report of lines it does not act on.

Why a module of its own: the YAML reader (:mod:`~dmvpn_lab.gdoi.config`), the IOS reader
(:mod:`~dmvpn_lab.gdoi.ios_config`) and the ACL grammar they share (:mod:`~dmvpn_lab.gdoi.acl`) all raise and
fill these; none of them may import another reader to get them (that was an import cycle).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# Both readers warn with the same words when a time-based replay window is configured.
REPLAY_WINDOW_WARNING = (
    "the window is sent to members and shown, but not enforced: Linux has no time-based anti-replay and "
    "group SAs run with replay-window 0 (many senders share one SPI); show output marks it `not enforced`"
)


class ConfigError(Exception):
    """A configuration the daemons cannot run with; ``str()`` is ``file:line: message (hint)``."""

    def __init__(
        self, message: str, *, path: str | None = None, line: int | None = None, hint: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.line = line
        self.hint = hint

    def located(self, path: str) -> ConfigError:
        """The same error with the file name filled in (parsers work on text, the loader knows the file)."""
        if self.path is None:
            self.path = path
        return self

    def __str__(self) -> str:
        where = self.path or "<config>"
        if self.line is not None:
            where = f"{where}:{self.line}"
        text = f"{where}: {self.message}"
        if self.hint:
            text += f" (hint: {self.hint})"
        return text


class Refused(ConfigError):
    """A line asks for something we cannot do: a ``refused`` report entry, or an error where none is kept."""


@dataclass(frozen=True)
class UnsupportedLine:
    """One configuration line this implementation does not act on."""

    line: int
    text: str
    action: Literal["ignored", "refused"]
    reason: str


@dataclass(frozen=True)
class ConfigWarning:
    """A configuration that loads and runs but will not behave as an operator reading it expects.

    Apart from :class:`UnsupportedLine` because nothing is skipped: the line is used (a replay window
    that is shown but not enforced), or what is wrong is a line that is missing (no pre-shared key).
    ``line`` is None when no single line is to blame.
    """

    line: int | None
    text: str
    reason: str


@dataclass
class ConfigReport:
    """What a configuration file asked for that we do not do, line by line, and what deserves a warning."""

    path: str
    format: Literal["ios", "yaml"]
    role: Literal["ks", "gm"] | None = None
    unsupported: list[UnsupportedLine] = field(default_factory=list)
    lines_outside_crypto: int = 0  # IOS lines outside crypto stanzas (interface Tunnel, router ...)
    warnings: list[ConfigWarning] = field(default_factory=list)

    def ignore(self, line: int, text: str, reason: str) -> None:
        self.unsupported.append(UnsupportedLine(line, text.strip(), "ignored", reason))

    def refuse(self, line: int, text: str, reason: str) -> None:
        self.unsupported.append(UnsupportedLine(line, text.strip(), "refused", reason))

    def warn(self, line: int | None, text: str, reason: str) -> None:
        self.warnings.append(ConfigWarning(line, text.strip(), reason))

    @property
    def refused(self) -> list[UnsupportedLine]:
        return [entry for entry in self.unsupported if entry.action == "refused"]

    @property
    def ignored(self) -> list[UnsupportedLine]:
        return [entry for entry in self.unsupported if entry.action == "ignored"]

    def first_refusal_error(self) -> ConfigError | None:
        refused = self.refused
        if not refused:
            return None
        first = refused[0]
        more = f"; {len(refused) - 1} more refused line(s)" if len(refused) > 1 else ""
        return ConfigError(
            f"refused: {first.text!r}: {first.reason}{more}",
            path=self.path,
            line=first.line,
            hint=f"run `gdoi check-config {self.path}` for the full list",
        )

    def render(self) -> list[str]:
        """Fixed-width lines for ``gdoi check-config``."""
        entries = [
            (entry.line, f"[{entry.action.upper():8}] {self.path}:{entry.line}: {entry.text}  -- {entry.reason}")
            for entry in self.unsupported
        ]
        # A warning about a missing line has no line number: it sorts after every located one.
        entries += [
            (
                warning.line if warning.line is not None else 10**9,
                f"[WARNING ] {self.path}" + (f":{warning.line}" if warning.line is not None else "")
                + f": {warning.text}  -- {warning.reason}",
            )
            for warning in self.warnings
        ]
        lines = [text for _, text in sorted(entries, key=lambda entry: entry[0])]
        role = {"ks": "key server", "gm": "group member", None: "unknown role"}[self.role]
        lines.append(
            f"{self.path}: {self.format} config for a {role}: {len(self.refused)} refused, "
            f"{len(self.ignored)} ignored, {len(self.warnings)} warning(s), "
            f"{self.lines_outside_crypto} line(s) outside crypto stanzas"
        )
        return lines
