#!/bin/sh
# Build the Debian 13 (trixie) root file system whose FRR (Debian's 10.3, the version the containerlab
# images carry) every router of the netns runtime runs, with chroot.
# Usage: scripts/frr-root.sh [folder]   (default /var/lib/dmvpn-lab/frr-trixie; as root; about 60 s)
set -eu
cd "$(dirname "$0")/.."
root=${1:-/var/lib/dmvpn-lab/frr-trixie}
if [ -x "$root/usr/lib/frr/zebra" ]; then
  echo ">> FRR root $root is there: $(chroot "$root" dpkg-query -W -f '${Package} ${Version}' frr)"
  exit 0
fi
# systemd-standalone-sysusers satisfies logrotate's cron dependency without systemd itself, which
# cannot be configured in a chroot.
scripts/debian-root.sh "$root" frr systemd-standalone-sysusers
echo ">> FRR root ready: $(chroot "$root" dpkg-query -W -f '${Package} ${Version}' frr)"
