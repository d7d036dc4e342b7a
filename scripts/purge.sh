#!/bin/sh
# Return the host to how it was before dmvpn-lab: stop every lab and sandbox, then remove everything the
# project put outside the clone, and the clone's .venv.  apt packages stay installed (FRR, tshark,
# user-mode-linux, strongSwan, debootstrap...): remove them with apt-get if you want them gone; setup.sh
# also disabled the frr and strongSwan system services, which purge leaves disabled.
# Usage: scripts/purge.sh   (as root; `make purge`)
set -u
cd "$(dirname "$0")/.."
say() { echo ">> purge: $*"; }

# 1. Sandboxes (User-Mode Linux kernels booted by make lab-up / make test): their umid starts with dmvpn-.
for pid in $(pgrep -f 'linux\.uml .*umid=dmvpn-' 2>/dev/null); do
  say "stopping sandbox kernel (pid $pid)"
  kill -9 "$pid" 2>/dev/null
done

# 2. Labs run directly on this kernel: only namespaces of labs whose state folder this project made.
for state in /var/tmp/dmvpn-lab/*/state.json; do
  [ -f "$state" ] || continue
  lab=$(basename "$(dirname "$state")")
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^clab-$lab-"); do
    say "removing namespace $ns and its processes"
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null
  done
done

# 3. Mounts under the project's folders (the FRR root's /proc and /run) go first, so that removing the
#    folders can never reach through a mount into the running system.
for top in /var/lib/dmvpn-lab /var/tmp/dmvpn-lab /run/dmvpn-lab; do
  awk -v top="$top" '$2 == top || index($2, top "/") == 1 {print $2}' /proc/mounts | sort -r |
    while read -r mnt; do say "unmounting $mnt"; umount -l "$mnt"; done
done

# 4. Folders: state, logs and sandbox spools; KS keys and the FRR root; per-lab run folders.
for dir in /var/tmp/dmvpn-lab /var/lib/dmvpn-lab /run/dmvpn-lab; do
  if [ -e "$dir" ]; then
    say "removing $dir"
    rm -rf --one-file-system "$dir"
  fi
done

# 5. The link that lets the sandbox kernel's modprobe find its modules.
for link in /lib/modules/*; do
  if [ -L "$link" ] && readlink "$link" | grep -q '^/usr/lib/uml/modules/'; then
    say "removing $link"
    rm -f "$link"
  fi
done
rmdir /lib/modules 2>/dev/null || true

# 6. The Python environment in the clone.
if [ -d .venv ]; then
  say "removing .venv"
  rm -rf .venv
fi
say "done; apt packages were left installed (see the top of scripts/purge.sh)"
