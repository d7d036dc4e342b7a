#!/bin/sh
# Build a Debian 13 (trixie) root file system holding FRR 10, for labs whose routers run a newer FRR
# than the host's (Debian 12 ships FRR 8.4, which lacks `ip nhrp authentication`).  The netns runtime
# runs a node's FRR from it with chroot when the node's env says FRR_ROOT=<this folder>.
# Usage: scripts/frr-root.sh [folder]   (default /var/lib/dmvpn-lab/frr-trixie; as root; about 30 s)
set -eu
root=${1:-/var/lib/dmvpn-lab/frr-trixie}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
if [ -x "$root/usr/lib/frr/zebra" ]; then
  echo ">> FRR root $root is there: $(chroot "$root" dpkg-query -W -f '${Package} ${Version}' frr)"
  exit 0
fi
command -v debootstrap >/dev/null || { echo "debootstrap is missing: apt-get install debootstrap" >&2; exit 1; }
echo ">> building the FRR root $root (debootstrap trixie, then apt-get install frr)"
rm -rf "$root.partial"
debootstrap --variant=minbase trixie "$root.partial" "$mirror" >"$root.log" 2>&1 ||
  { echo "debootstrap failed: see $root.log" >&2; exit 1; }
# systemd-standalone-sysusers satisfies logrotate's cron dependency without systemd itself, which
# cannot be configured in a chroot.
chroot "$root.partial" sh -c 'DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
  frr systemd-standalone-sysusers && apt-get clean' >>"$root.log" 2>&1 ||
  { echo "installing FRR in $root.partial failed: see $root.log" >&2; exit 1; }
mv "$root.partial" "$root"
echo ">> FRR root ready: $(chroot "$root" dpkg-query -W -f '${Package} ${Version}' frr)"
