#!/usr/bin/env bash
# Builds the sandbox node image (Debian with systemd and its own Docker engine) on the local engine, once
# per package list: the image tag and a root filesystem archive in the cache are named by a hash of the list.
#   sandbox-image.sh PACKAGE...       prints "TAG built|imported|cached" (one line)
# SANDBOX_MIRROR overrides the Debian mirror; by default it is the one this machine's apt sources name.
set -euo pipefail
shopt -s nullglob

suite=bookworm
repository=swarm-sandbox/node
cache=${SANDBOX_CACHE:-/var/tmp/swarm-test-cache}
# Bump when the way the root filesystem is prepared changes, so that cached images are rebuilt.
recipe=2

(($#)) || { echo "usage: $0 PACKAGE..." >&2; exit 2; }
packages="$(printf '%s\n' "$@" | sort -u | paste -sd, -)"
key="$(printf '%s|%s|%s' "$recipe" "$suite" "$packages" | sha256sum | cut -c1-16)"
tag="$repository:$key"
archive="$cache/sandbox-node-$key.tar.gz"

if docker image inspect "$tag" >/dev/null 2>&1; then echo "$tag cached"; exit 0; fi

mirror_of_apt_sources() {
  # The first Debian archive (a URI ending in /debian) of the one-line or deb822 sources.
  local files=(/etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources)
  { grep -hvE '^[[:space:]]*#' "${files[@]}" 2>/dev/null || true; } |
    grep -oE '(https?|file)://[^ ]*/debian/?( |$)' | head -n1 | tr -d ' '
}

if [[ ! -s "$archive" ]]; then
  mirror="${SANDBOX_MIRROR:-$(mirror_of_apt_sources)}"
  [[ -n "$mirror" ]] || { echo "sandbox-image: no Debian mirror in /etc/apt/sources*; set SANDBOX_MIRROR" >&2; exit 1; }
  mkdir -p "$cache"
  root="$(mktemp -d /var/tmp/sandbox-root.XXXXXX)"
  trap 'rm -rf "$root"' EXIT
  echo "sandbox-image: debootstrap $suite from $mirror with $packages" >&2
  debootstrap --variant=minbase --include="$packages" "$suite" "$root" "$mirror" >&2
  # The managers' etcd member is the agent's child; Debian's own etcd unit would hold its ports.
  chroot "$root" systemctl disable etcd.service >&2 || true
  # Docker mounts /proc/sys read-only in a container; a VM's is writable, and the agent's data plane sets
  # sysctls of its bridges and VXLAN devices (in the node's own network namespace).
  cat > "$root/etc/systemd/system/proc-sys-writable.service" <<'UNIT'
[Unit]
Description=Writable /proc/sys, as on a VM
DefaultDependencies=no
Before=sysinit.target systemd-sysctl.service
ConditionPathIsReadWrite=!/proc/sys

[Service]
Type=oneshot
ExecStart=/bin/mount -o remount,rw /proc/sys

[Install]
WantedBy=sysinit.target
UNIT
  chroot "$root" systemctl enable proc-sys-writable.service >&2
  chroot "$root" apt-get clean
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/log/*.log
  : > "$root/etc/machine-id"
  tmp="$(mktemp --suffix=.tar.gz "$cache/.sandbox-node-XXXXXX")"
  tar -C "$root" --numeric-owner -czf "$tmp" .
  chmod 644 "$tmp"
  mv "$tmp" "$archive"
  result=built
else
  result=imported
fi
docker import -c 'CMD ["/lib/systemd/systemd"]' -c 'ENV container=docker' "$archive" "$tag" >/dev/null
# Images and archives (180 MB each) of other package lists or recipes are removed; an image that nodes
# still use stays until they are gone.
find "$cache" -maxdepth 1 -name 'sandbox-node-*.tar.gz' ! -name "${archive##*/}" -delete
docker images --format '{{.Repository}}:{{.Tag}}' "$repository" | grep -vxF "$tag" | xargs -r docker rmi >/dev/null 2>&1 || true
echo "$tag $result"
