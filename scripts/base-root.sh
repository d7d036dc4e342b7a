#!/bin/sh
# The containerlab images' base where no registry is reachable (the project's own machines): a Debian 13
# minbase root that src/dmvpn_lab/lab/images.py imports as debian:trixie-slim, with the dpkg and apt
# settings Docker's official Debian images carry (unsafe-io, no caches, no docs), so the Dockerfiles
# build the same way on it as on the pulled image.
# Usage: scripts/base-root.sh [folder]   (default /var/lib/dmvpn-lab/images/trixie-root; as root)
set -eu
cd "$(dirname "$0")/.."
root=${1:-/var/lib/dmvpn-lab/images/trixie-root}
scripts/debian-root.sh "$root"
echo force-unsafe-io > "$root/etc/dpkg/dpkg.cfg.d/docker-apt-speedup"
cat > "$root/etc/dpkg/dpkg.cfg.d/docker-slim" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
CFG
printf 'APT::Install-Recommends "false";\nAcquire::Languages "none";\n' > "$root/etc/apt/apt.conf.d/docker-slim"
