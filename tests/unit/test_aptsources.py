"""The FRR root is built from the host's own Debian mirror: both apt source formats are read."""

from __future__ import annotations

from pathlib import Path

from dmvpn_lab.lab.aptsources import debian_mirror, source_files


def _apt(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_deb822_stanza_with_comments_and_security_archive(tmp_path):
    apt = _apt(
        tmp_path,
        {
            "sources.list.d/debian.sources": (
                "Types: deb\n# http://snapshot.example/archive\nURIs: http://mirror.local/debian\n"
                "Suites: bookworm bookworm-updates\nComponents: main\n\n"
                "Types: deb\nURIs: http://mirror.local/debian-security\nSuites: bookworm-security\nComponents: main\n"
            ),
        },
    )
    assert debian_mirror(source_files(apt)) == "http://mirror.local/debian"


def test_one_line_form_with_options_and_a_third_party_repo_first(tmp_path):
    apt = _apt(
        tmp_path,
        {
            "sources.list": (
                "deb [arch=amd64 signed-by=/k.gpg] https://packages.vendor.example/apt stable-tools main\n"
                "# deb http://commented.out/debian bookworm main\n"
                "deb-src http://src.only/debian bookworm main\n"
                "deb [ signed-by=/usr/share/keyrings/debian.gpg ] http://proxy.lan:3142/debian/ bookworm main contrib\n"
            ),
        },
    )
    assert debian_mirror(source_files(apt)) == "http://proxy.lan:3142/debian"


def test_disabled_stanzas_and_files_apt_ignores_are_skipped(tmp_path):
    apt = _apt(
        tmp_path,
        {
            "sources.list.d/a.sources": (
                "Enabled: no\nTypes: deb\nURIs: http://off/debian\nSuites: bookworm\nComponents: main\n"
            ),
            "sources.list.d/b.list.disabled": "deb http://ignored/debian bookworm main\n",
            "sources.list.d/c.list": "deb http://on/debian trixie main\n",
        },
    )
    assert debian_mirror(source_files(apt)) == "http://on/debian"


def test_ubuntu_sources_give_no_debian_mirror(tmp_path):
    apt = _apt(tmp_path, {"sources.list": "deb http://archive.ubuntu.com/ubuntu noble main restricted\n"})
    assert debian_mirror(source_files(apt)) is None
