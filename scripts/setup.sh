#!/bin/sh
# Install what the lab needs on a fresh Debian 12 / Ubuntu 22.04+ machine (as root).
# Sandbox kernel packages (user-mode-linux) are installed only where the running kernel lacks GRE/ESP.
set -eu
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
echo ">> apt: FRR, tshark, iproute2, iptables and test tools"
apt-get update -qq
echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
# FRR itself comes from a Debian 13 root (scripts/frr-root.sh): the netns runtime runs Debian's FRR 10.3,
# the version the containerlab images carry.  docker.io is the containerlab runtime's engine (on a host
# without one; never started here when the kernel lacks GRE/ESP: the sandbox kernel runs it).
apt-get install -y -qq --no-install-recommends tshark tcpdump iproute2 iptables kmod procps psmisc util-linux \
  iputils-ping traceroute iperf3 python3-pip python3-venv strongswan-charon strongswan-swanctl debootstrap >/dev/null
# Docker CE, where installed, stays: docker.io would conflict with it.
command -v dockerd >/dev/null || apt-get install -y -qq --no-install-recommends docker.io >/dev/null
if ! modprobe -q ip_gre 2>/dev/null || ! modprobe -q esp4 2>/dev/null || ! modprobe -q xfrm_user 2>/dev/null; then
  echo ">> this kernel lacks ip_gre/esp4/xfrm_user: installing the sandbox kernel (User-Mode Linux)"
  # slirp: the sandbox's network for apt inside image builds (containerlab runtime).
  apt-get install -y -qq --no-install-recommends user-mode-linux slirp >/dev/null
fi
# strongSwan's package starts its own service: the per-peer IPsec baseline runs one charon per router.
systemctl disable --now strongswan-starter strongswan >/dev/null 2>&1 || true
# containerlab compiles (CPU) while the Debian roots download (network): at the same time.
echo ">> containerlab runtime: containerlab built from source (pinned), in the background"
scripts/containerlab.sh > /tmp/dmvpn-lab-containerlab-build.log 2>&1 &
clab_build=$!
scripts/frr-root.sh
if ! docker info >/dev/null 2>&1; then
  scripts/base-root.sh  # no engine here to pull with: the sandbox imports this root as the images' base
fi
if ! wait "$clab_build"; then
  cat /tmp/dmvpn-lab-containerlab-build.log >&2
  echo "building containerlab failed (log above)" >&2
  exit 1
fi
tail -1 /tmp/dmvpn-lab-containerlab-build.log
echo ">> pip: dmvpn-lab and its test tools, in .venv"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q -e ".[test,bench]"
echo ">> ready: make lab-up && make test"
