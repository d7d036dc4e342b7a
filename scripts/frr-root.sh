#!/bin/sh
# Build a Debian 13 (trixie) root file system holding FRR 10, for labs whose routers run a newer FRR
# than the host's (Debian 12 ships FRR 8.4, which lacks `ip nhrp authentication`).  The netns runtime
# runs a node's FRR from it with chroot when the node's env says FRR_ROOT=<this folder>.
# Usage: scripts/frr-root.sh [folder]   (default /var/lib/dmvpn-lab/frr-trixie; as root; about 30 s)
# The Debian mirror is the one the host's apt uses (DEBIAN_MIRROR overrides it); apt's HTTP proxy, if
# one is set, is used as well.
set -eu
cd "$(dirname "$0")/.."
root=${1:-/var/lib/dmvpn-lab/frr-trixie}
if [ -x "$root/usr/lib/frr/zebra" ]; then
  echo ">> FRR root $root is there: $(chroot "$root" dpkg-query -W -f '${Package} ${Version}' frr)"
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
echo ">> building the FRR root $root (debootstrap trixie from $DEBIAN_MIRROR, then apt-get install frr)"
rm -rf "$root.partial"
debootstrap --variant=minbase trixie "$root.partial" "$DEBIAN_MIRROR" >"$root.log" 2>&1 ||
  { echo "debootstrap failed: see $root.log" >&2; exit 1; }
# systemd-standalone-sysusers satisfies logrotate's cron dependency without systemd itself, which
# cannot be configured in a chroot.
chroot "$root.partial" sh -c 'DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
  frr systemd-standalone-sysusers && apt-get clean' >>"$root.log" 2>&1 ||
  { echo "installing FRR in $root.partial failed: see $root.log" >&2; exit 1; }
mv "$root.partial" "$root"
echo ">> FRR root ready: $(chroot "$root" dpkg-query -W -f '${Package} ${Version}' frr)"
