#!/bin/sh
# Start order of a DMVPN node: plumbing (setup.sh), then the GDOI sidecar (it installs fail-closed xfrm
# policies first, so GRE never leaves in clear), then FRR with the daemons named in FRR_DAEMONS.
set -e
want=${CLAB_INTFS:-0}
i=0
while [ "$(ls /sys/class/net | grep -c '^eth[1-9]')" -lt "$want" ]; do
  i=$((i + 1)); [ $i -gt 600 ] && { echo "interfaces never appeared" >&2; exit 1; }
  sleep 0.1
done
[ -f /etc/dmvpn-lab/setup.sh ] && sh /etc/dmvpn-lab/setup.sh
mkdir -p /run/gdoi
if [ -n "$GDOI_ROLE" ]; then
  set -- gdoi "$GDOI_ROLE" --config /etc/gdoi/gdoi.cfg --run-dir /run/gdoi --local-address "$GDOI_LOCAL_ADDRESS"
  [ -n "$GDOI_XFRM_ADDRESS" ] && set -- "$@" --xfrm-address "$GDOI_XFRM_ADDRESS"
  [ "$GDOI_ROLE" = ks ] && set -- "$@" --key-dir /var/lib/gdoi
  "$@" > /var/log/gdoi.log 2>&1 &
fi
if [ -n "$FRR_DAEMONS" ]; then
  for d in $FRR_DAEMONS; do sed -i "s/^${d}=no/${d}=yes/" /etc/frr/daemons; done
  exec /usr/lib/frr/docker-start
fi
exec sleep infinity
