"""The Debian mirror this host's apt already uses, for building the FRR root with debootstrap.

A user behind a local mirror or a proxy must get the same FRR root as anyone else, so the mirror is read
from the host's own apt sources (``/etc/apt/sources.list``, ``/etc/apt/sources.list.d/*.list`` one-line
entries and ``*.sources`` deb822 stanzas) rather than written into a script.  Only the standard library
is used: ``scripts/frr-root.sh`` runs this before the package is installed
(``PYTHONPATH=src python3 -m dmvpn_lab.lab.aptsources``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

# Suites of Debian's main archive (security and update archives hold no full distribution).
DEBIAN_SUITES = frozenset(
    {"buster", "bullseye", "bookworm", "trixie", "forky", "duke", "sid", "oldstable", "stable", "testing", "unstable"}
)
APT_DIR = Path("/etc/apt")


def source_files(apt_dir: Path = APT_DIR) -> list[Path]:
    """The files apt reads, in apt's order: sources.list, then sources.list.d/ sorted by name."""
    files = [apt_dir / "sources.list"]
    folder = apt_dir / "sources.list.d"
    if folder.is_dir():
        files += sorted(p for p in folder.iterdir() if p.suffix in (".list", ".sources"))
    return [p for p in files if p.is_file()]


def _one_line_entries(text: str) -> Iterator[tuple[str, list[str], list[str]]]:
    """(uri, suites, components) of each ``deb [options] uri suite component...`` line."""
    for raw in text.splitlines():
        words = raw.split("#", 1)[0].split()
        if not words or words[0] != "deb":
            continue
        words = words[1:]
        if words and words[0].startswith("["):  # options such as [arch=amd64 signed-by=...]
            while words and not words[0].endswith("]"):
                words = words[1:]
            words = words[1:]
        if len(words) >= 3:
            yield words[0], [words[1]], words[2:]


def _deb822_entries(text: str) -> Iterator[tuple[str, list[str], list[str]]]:
    """(uri, suites, components) of each enabled ``Types: deb`` stanza, one per URI."""
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        key = ""
        for line in stanza.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if line[0].isspace() and key:  # a continuation line
                fields[key] += " " + line.strip()
                continue
            key, _, value = line.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
            continue
        for uri in fields.get("uris", "").split():
            yield uri, fields.get("suites", "").split(), fields.get("components", "").split()


def debian_mirror(files: Iterable[Path]) -> str | None:
    """The first URI that serves a Debian distribution's main component, or None (say, on Ubuntu)."""
    for path in files:
        text = path.read_text(errors="replace")
        entries = _deb822_entries(text) if path.suffix == ".sources" else _one_line_entries(text)
        for uri, suites, components in entries:
            if not uri.startswith(("http://", "https://", "ftp://", "file:")):
                continue
            if "main" in components and any(suite in DEBIAN_SUITES for suite in suites):
                return uri.rstrip("/")
    return None


def main() -> int:
    mirror = debian_mirror(source_files())
    if mirror is None:
        print("no Debian mirror in /etc/apt/sources.list{,.d}: set DEBIAN_MIRROR", file=sys.stderr)
        return 1
    print(mirror)
    return 0


if __name__ == "__main__":
    sys.exit(main())
