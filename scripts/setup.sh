#!/usr/bin/env bash
# Prepares this machine for the agent, its tests and the demo: Debian packages and the virtualenv.
# Run as root on Debian 12. Idempotent: on a second run it only checks, and starts nothing.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

packages=(
  docker.io containerd runc      # each test host runs its own dockerd + containerd
  etcd-server                    # managers keep state in etcd; tests start their own
  nftables iptables iproute2     # the routing mesh, test bridges and namespaces
  util-linux procps              # nsenter, unshare; ps/kill for the harness
  busybox-static                 # the test workload image is built from it
  python3 python3-venv           # the agent's virtualenv
  make ca-certificates curl      # curl: tests call published ports
  debootstrap                    # the sandbox nodes' image (playbooks/sandbox.yml)
  shellcheck                     # ansible-test sanity checks the collection's shell scripts with it
)

missing=()
for pkg in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$pkg")
  fi
done

if ((${#missing[@]})); then
  if [[ $EUID -ne 0 ]]; then
    echo "setup: missing packages ${missing[*]}; run scripts/setup.sh as root" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  # Debian starts services on install (docker.io, etcd-server); setup must not leave daemons running.
  created_policy=""
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    created_policy=1
  fi
  trap 'if [[ -n "$created_policy" ]]; then rm -f /usr/sbin/policy-rc.d; fi' EXIT
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The virtualenv is rebuilt only when the agent's dependencies changed (stamp = hash of pyproject.toml).
venv="$repo/.venv"
stamp="$venv/.swarm-setup-stamp"
want="$(sha256sum agent/pyproject.toml | cut -d' ' -f1)"
if [[ ! -x "$venv/bin/python" ]]; then
  echo "setup: creating $venv"
  python3 -m venv "$venv"
fi
if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]] || ! "$venv/bin/python" -c 'import swarm_agent' 2>/dev/null; then
  echo "setup: installing the agent and its test dependencies into $venv"
  "$venv/bin/pip" install -q -e 'agent[test]'
  echo "$want" > "$stamp"
fi
echo "setup: ready"
