#!/bin/sh
# supervisord's program "frr": the daemons named in FRR_DAEMONS, started by Debian's frrinit.sh (so
# FRR's own watchfrr restarts any that dies), logging to /var/log/frr/<daemon>.log.
# On a group member FRR waits until the GDOI daemon answers on its control socket: it opens that socket
# only after its fail-close policies are in the kernel, so GRE's first packet is never sent in clear.
set -eu
if [ -n "${IKE_DAEMON:-}" ]; then
  # The per-peer IPsec baseline needs a charon per router, which this image does not start: FRR stays
  # down rather than send GRE unprotected.  That topology runs on the netns runtime (README.md).
  echo "dmvpn-frr: IKE_DAEMON=$IKE_DAEMON is not run in this image; FRR stays down (use the netns runtime)" >&2
  exit 1
fi
if [ "${GDOI_ROLE:-}" = gm ]; then
  waited=0
  until [ -S /run/gdoi/gdoi-gm.sock ]; do
    waited=$((waited + 1))
    if [ "$waited" -gt 1200 ]; then
      echo "dmvpn-frr: the GDOI member has not opened /run/gdoi/gdoi-gm.sock in 120 s; FRR stays down (fail-close)" >&2
      exit 1
    fi
    sleep 0.1
  done
fi
for daemon in $FRR_DAEMONS; do
  sed -i "s/^${daemon}=no/${daemon}=yes/" /etc/frr/daemons
  grep -q -- "--log file:/var/log/frr/${daemon}.log" /etc/frr/daemons ||
    sed -i "s|^\(${daemon}_options=\"[^\"]*\)\"|\1 --log file:/var/log/frr/${daemon}.log\"|" /etc/frr/daemons
done
install -d -o frr -g frr /var/log/frr /run/frr
/usr/lib/frr/frrinit.sh start
trap '/usr/lib/frr/frrinit.sh stop; exit 0' TERM INT
while kill -0 "$(cat /run/frr/watchfrr.pid 2>/dev/null || echo 0)" 2>/dev/null; do
  sleep 2 &
  wait $! || true
done
echo "dmvpn-frr: watchfrr is gone; FRR stopped" >&2
exit 1
