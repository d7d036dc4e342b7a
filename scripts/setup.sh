#!/bin/sh
# Install what the lab needs on a fresh Debian 12 / Ubuntu 22.04+ machine (as root).
# Sandbox kernel packages (user-mode-linux) are installed only where the running kernel lacks GRE/ESP.
set -eu
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
echo ">> apt: FRR, tshark, iproute2, iptables and test tools"
apt-get update -qq
echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
apt-get install -y -qq --no-install-recommends frr tshark tcpdump iproute2 iptables kmod procps psmisc \
  iputils-ping traceroute iperf3 python3-pip python3-venv strongswan-charon strongswan-swanctl debootstrap >/dev/null
if ! modprobe -q ip_gre 2>/dev/null || ! modprobe -q esp4 2>/dev/null || ! modprobe -q xfrm_user 2>/dev/null; then
  echo ">> this kernel lacks ip_gre/esp4/xfrm_user: installing the sandbox kernel (User-Mode Linux)"
  apt-get install -y -qq --no-install-recommends user-mode-linux >/dev/null
fi
# frr's package starts its own daemons in the root namespace; the lab runs its own per node.
systemctl disable --now frr >/dev/null 2>&1 || service frr stop >/dev/null 2>&1 || true
# Likewise strongSwan's own service: the per-peer IPsec baseline runs one charon per router.
systemctl disable --now strongswan-starter strongswan >/dev/null 2>&1 || true
# The NHRP-authentication lab needs FRR 10 (labtests/test_nhrp_lifecycle.py): a chroot beside the host's FRR.
scripts/frr-root.sh
echo ">> pip: dmvpn-lab and its test tools, in .venv"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q -e ".[test,bench]"
echo ">> ready: make lab-up && make test"
