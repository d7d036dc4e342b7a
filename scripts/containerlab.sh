#!/bin/sh
# Build containerlab from source at the pinned release, with the Go toolchain (no install script, no
# registry of binaries needed): the module comes from the Go module proxy, checked against go.sum's
# checksum database like any Go module.
# Usage: scripts/containerlab.sh   (installs /var/lib/dmvpn-lab/bin/containerlab; about 2 minutes)
# `go install github.com/srl-labs/containerlab@VERSION` cannot be used as such: containerlab's go.mod has
# replace directives, which `go install pkg@version` refuses, so the pinned module is downloaded and
# installed from its own folder, where go.mod (replaces included) applies.
set -eu
version=${CONTAINERLAB_VERSION:-v0.69.3}
bin=/var/lib/dmvpn-lab/bin
if [ -x "$bin/containerlab" ] && "$bin/containerlab" version 2>/dev/null | grep -q "version: *${version#v}"; then
  echo ">> containerlab $version is there: $bin/containerlab"
  exit 0
fi
command -v go >/dev/null || { echo "go is missing: install Go 1.23 or newer (https://go.dev/dl/)" >&2; exit 1; }
echo ">> building containerlab $version from source (go install; about 2 minutes)"
work=$(mktemp -d)
trap 'chmod -R u+w "$work"; rm -rf "$work"' EXIT
dir=$(GOFLAGS=-mod=mod go mod download -json "github.com/srl-labs/containerlab@$version" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')
cp -r "$dir" "$work/src"
chmod -R u+w "$work/src"
mkdir -p "$bin"
(cd "$work/src" && GOBIN="$bin" go install -trimpath -ldflags "-s -w -X github.com/srl-labs/containerlab/cmd/version.Version=${version#v}" .)
echo ">> containerlab ready: $("$bin/containerlab" version | grep -m1 version)"
