#!/bin/sh
# Kernel plumbing of this node; run once in the node's namespace. Generated.
set -e
# The lab is IPv4 only: no IPv6 link-local chatter (MLD, router solicitations) on its links, so the
# wire checks can count any IPv6 frame as a finding.
if [ -d /proc/sys/net/ipv6 ]; then
  sysctl -qw net.ipv6.conf.all.disable_ipv6=1
  sysctl -qw net.ipv6.conf.default.disable_ipv6=1
fi
ip addr add 2.2.2.2/32 dev lo
ip addr add 172.17.1.1/24 dev eth1
ip link set eth1 up
ip addr add 192.168.1.1/24 dev eth2
ip link set eth2 up
ip route replace default via 172.17.1.254
ip tunnel add gre1 mode gre key 123 ttl 64 local 172.17.1.1 dev eth1
ip addr add 192.168.100.1/32 dev gre1
ip link set gre1 mtu 1400 up
iptables -A FORWARD -i gre1 -o gre1 -m hashlimit --hashlimit-upto 4/minute --hashlimit-burst 1 --hashlimit-mode srcip,dstip --hashlimit-srcmask 24 --hashlimit-dstmask 24 --hashlimit-name nhrp-redirect -j NFLOG --nflog-group 1 --nflog-size 128 --nflog-threshold 1 2>/dev/null || iptables-legacy -A FORWARD -i gre1 -o gre1 -m hashlimit --hashlimit-upto 4/minute --hashlimit-burst 1 --hashlimit-mode srcip,dstip --hashlimit-srcmask 24 --hashlimit-dstmask 24 --hashlimit-name nhrp-redirect -j NFLOG --nflog-group 1 --nflog-size 128 --nflog-threshold 1
