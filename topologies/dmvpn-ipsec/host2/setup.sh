#!/bin/sh
# Kernel plumbing of this node; run once in the node's namespace. Generated.
set -e
ip addr add 192.168.2.10/24 dev eth1
ip link set eth1 up
ip route add default via 192.168.2.1
