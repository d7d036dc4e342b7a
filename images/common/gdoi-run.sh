#!/bin/sh
# supervisord's program "gdoi": this node's GDOI daemon, from the container's environment.
# The harness can start it once with another configuration (a wrong key, for the negative tests) by
# putting that file at /run/dmvpn-lab/gdoi-override.cfg; the topology's /etc/gdoi/gdoi.cfg stays read-only.
config=/etc/gdoi/gdoi.cfg
[ -f /run/dmvpn-lab/gdoi-override.cfg ] && config=/run/dmvpn-lab/gdoi-override.cfg
set -- gdoi "$GDOI_ROLE" --config "$config" --run-dir /run/gdoi --keylog /run/dmvpn-lab/ike-keylog.txt
[ -n "${GDOI_LOCAL_ADDRESS:-}" ] && set -- "$@" --local-address "$GDOI_LOCAL_ADDRESS"
if [ "$GDOI_ROLE" = gm ] && [ -n "${GDOI_XFRM_ADDRESS:-}" ]; then
  set -- "$@" --xfrm-address "$GDOI_XFRM_ADDRESS"
fi
[ "$GDOI_ROLE" = ks ] && set -- "$@" --key-dir /var/lib/gdoi
exec "$@"
