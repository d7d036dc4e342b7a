#!/bin/sh
# Kernel plumbing of this node; run once in the node's namespace. Generated.
set -e
# The lab is IPv4 only: no IPv6 link-local chatter (MLD, router solicitations) on its links, so the
# wire checks can count any IPv6 frame as a finding.
if [ -d /proc/sys/net/ipv6 ]; then
  sysctl -qw net.ipv6.conf.all.disable_ipv6=1
  sysctl -qw net.ipv6.conf.default.disable_ipv6=1
fi
ip addr add 1.1.1.254/24 dev eth1
ip link set eth1 up
ip addr add 172.17.1.254/24 dev eth2
ip link set eth2 up
ip route add 2.2.2.2/32 via 172.17.1.1
ip addr add 172.27.1.254/24 dev eth3
ip link set eth3 up
ip route add 11.11.11.11/32 via 172.27.1.1
ip addr add 172.37.1.254/24 dev eth4
ip link set eth4 up
ip route add 12.12.12.12/32 via 172.37.1.1
ip addr add 172.47.1.254/24 dev eth5
ip link set eth5 up
ip route add 13.13.13.13/32 via 172.47.1.1
