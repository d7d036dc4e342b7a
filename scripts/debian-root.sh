#!/bin/sh
# Build a Debian 13 (trixie) root file system with debootstrap, plus the packages named after it.
# Usage: scripts/debian-root.sh FOLDER [PACKAGE...]   (as root; about 30 s without packages)
# Used for the netns runtime's FRR root (scripts/frr-root.sh) and for the containerlab images' base where
# no registry is reachable (src/dmvpn_lab/lab/images.py imports it as debian:trixie-slim).
# The Debian mirror is the one the host's apt uses (DEBIAN_MIRROR overrides it); apt's HTTP proxy, if
# one is set, is used as well.
set -eu
cd "$(dirname "$0")/.."
root=$1
shift
if [ -x "$root/usr/bin/apt-get" ]; then
  echo ">> Debian root $root is there"
  exit 0
fi
command -v debootstrap >/dev/null || { echo "debootstrap is missing: apt-get install debootstrap" >&2; exit 1; }
if [ -z "${DEBIAN_MIRROR:-}" ]; then
  if ! DEBIAN_MIRROR=$(PYTHONPATH=src python3 -m dmvpn_lab.lab.aptsources); then
    DEBIAN_MIRROR=http://deb.debian.org/debian
    echo ">> no Debian mirror in this host's apt sources: using $DEBIAN_MIRROR (set DEBIAN_MIRROR to choose)"
  fi
fi
if [ -z "${http_proxy:-}" ] && command -v apt-config >/dev/null; then
  eval "$(apt-config shell http_proxy Acquire::http::Proxy)"
  [ -n "${http_proxy:-}" ] && export http_proxy && echo ">> using apt's HTTP proxy $http_proxy"
fi
mkdir -p "$(dirname "$root")"
echo ">> building the Debian root $root (debootstrap trixie from $DEBIAN_MIRROR${*:+, then apt-get install $*})"
rm -rf "$root.partial"
debootstrap --variant=minbase trixie "$root.partial" "$DEBIAN_MIRROR" >"$root.log" 2>&1 ||
  { echo "debootstrap failed: see $root.log" >&2; exit 1; }
if [ $# -gt 0 ]; then
  chroot "$root.partial" sh -c "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $* && apt-get clean" \
    >>"$root.log" 2>&1 || { echo "installing $* in $root.partial failed: see $root.log" >&2; exit 1; }
fi
chroot "$root.partial" apt-get clean
mv "$root.partial" "$root"
echo ">> Debian root ready: $root"
