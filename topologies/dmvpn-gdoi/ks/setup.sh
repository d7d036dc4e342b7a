#!/bin/sh
# Kernel plumbing of this node; run once in the node's namespace. Generated.
set -e
# The lab is IPv4 only: no IPv6 link-local chatter (MLD, router solicitations) on its links, so the
# wire checks can count any IPv6 frame as a finding.
if [ -d /proc/sys/net/ipv6 ]; then
  sysctl -qw net.ipv6.conf.all.disable_ipv6=1
  sysctl -qw net.ipv6.conf.default.disable_ipv6=1
fi
ip addr add 1.1.1.1/24 dev eth1
ip link set eth1 up
ip route replace default via 1.1.1.254
