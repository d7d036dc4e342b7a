#!/bin/sh
# The start of every dmvpn-lab container (tini runs it as PID 1's child).
# 1. wait for the topology's links: containerlab adds them after the container starts (CLAB_INTFS);
# 2. the node's plumbing, /etc/dmvpn-lab/setup.sh (addresses, GRE tunnel, routes), bound in read-only;
# 3. supervisord runs the node's daemons and restarts the GDOI daemon if it dies: program "gdoi" (KS or
#    GM, when GDOI_ROLE is set) and program "frr" (when FRR_DAEMONS is set), which starts FRR only once
#    the member's fail-close policies are in.  A node with neither (hosts, the underlay) just stays up.
# Everything goes to the container's output: `docker logs clab-<lab>-<node>`.
set -eu
want=${CLAB_INTFS:-0}
waited=0
while [ "$(ls /sys/class/net | grep -c '^eth[1-9]')" -lt "$want" ]; do
  waited=$((waited + 1))
  if [ "$waited" -gt 1200 ]; then
    echo "dmvpn-entrypoint: $want links expected (CLAB_INTFS), only $(ls /sys/class/net | grep -c '^eth[1-9]') appeared in 120 s" >&2
    exit 1
  fi
  sleep 0.1
done
if [ -f /etc/dmvpn-lab/setup.sh ]; then
  echo "dmvpn-entrypoint: running /etc/dmvpn-lab/setup.sh"
  sh /etc/dmvpn-lab/setup.sh
fi
if [ -z "${GDOI_ROLE:-}" ] && [ -z "${FRR_DAEMONS:-}" ]; then
  echo "dmvpn-entrypoint: no daemons on this node; ready"
  exec sleep infinity
fi
mkdir -p /run/dmvpn-lab /run/gdoi
conf=/run/dmvpn-lab/supervisord.conf
cat > "$conf" <<CONF
[supervisord]
nodaemon=true
user=root
logfile=/dev/null
logfile_maxbytes=0
pidfile=/run/dmvpn-lab/supervisord.pid

[unix_http_server]
file=/run/dmvpn-lab/supervisor.sock

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix:///run/dmvpn-lab/supervisor.sock
CONF
if [ -n "${GDOI_ROLE:-}" ]; then
  cat >> "$conf" <<CONF

[program:gdoi]
command=/usr/local/bin/dmvpn-gdoi
priority=10
autorestart=true
startsecs=2
startretries=10
stopsignal=TERM
stopwaitsecs=15
stdout_logfile=/dev/fd/1
stdout_logfile_maxbytes=0
redirect_stderr=true
CONF
fi
if [ -n "${FRR_DAEMONS:-}" ]; then
  cat >> "$conf" <<CONF

[program:frr]
command=/usr/local/bin/dmvpn-frr
priority=20
autorestart=true
startsecs=0
stopsignal=TERM
stopwaitsecs=30
stdout_logfile=/dev/fd/1
stdout_logfile_maxbytes=0
redirect_stderr=true
CONF
fi
exec supervisord -n -c "$conf"
