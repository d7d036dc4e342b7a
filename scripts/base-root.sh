#!/bin/sh
# The containerlab images' base where no registry is reachable (the project's own machines): a Debian 13
# minbase root that src/dmvpn_lab/lab/images.py imports as debian:trixie-slim, with the dpkg and apt
# settings Docker's official Debian images carry (unsafe-io, no docs).
# It already holds the packages images/Dockerfile installs (debootstrap downloads them on the host, at
# the host's speed): the Dockerfile's `apt-get install` then finds them installed, where in the sandbox
# kernel it would fetch and unpack them through user-mode networking and UML's slow system calls, for
# minutes.  Same Debian packages, same versions; on a user's machine the pulled base is bare and the
# build installs them.  (The ks image built here thereby carries FRR too; it does not run it.)
# Usage: scripts/base-root.sh [folder]   (default /var/lib/dmvpn-lab/images/trixie-root; as root)
# It also writes <folder>.tar, the root as one archive: the sandbox imports that file, where reading the
# root's many small files through UML's hostfs takes minutes.
set -eu
cd "$(dirname "$0")/.."
root=${1:-/var/lib/dmvpn-lab/images/trixie-root}
packages=$(sed -n 's/^ *\(.*[a-z0-9]\) *\\\?$/\1/p' images/Dockerfile | grep -v '^[A-Z#&]' | tr ' ' '\n' | grep -v '^$' | sort -u)
scripts/debian-root.sh "$root" $packages
echo force-unsafe-io > "$root/etc/dpkg/dpkg.cfg.d/docker-apt-speedup"
cat > "$root/etc/dpkg/dpkg.cfg.d/docker-slim" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
CFG
printf 'APT::Install-Recommends "false";\nAcquire::Languages "none";\n' > "$root/etc/apt/apt.conf.d/docker-slim"
if [ ! -f "$root.tar" ] || [ "$root/var/lib/dpkg/status" -nt "$root.tar" ]; then
  tar -C "$root" -cf "$root.tar.partial" . && mv "$root.tar.partial" "$root.tar"
  echo ">> base archive ready: $root.tar ($(du -h "$root.tar" | cut -f1))"
fi
