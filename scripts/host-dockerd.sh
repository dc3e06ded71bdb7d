#!/usr/bin/env bash
# Starts this machine's Docker engine when none answers, and stops it again only if this script started it.
#   host-dockerd.sh start   prints "started" or "running"
#   host-dockerd.sh stop    prints "stopped", or "kept" for an engine this script did not start or that still
#                           has containers (another sandbox's)
# There is no systemd on the test machines, so dockerd runs in the background with a pidfile of our own.
# It leaves the machine's iptables alone (--iptables=false): the sandbox needs neither NAT nor published
# ports, and the rules and DROP policy dockerd would install outlive it and get in the way of other tests.
set -euo pipefail

state_dir=/run/swarm-sandbox
pidfile="$state_dir/dockerd.pid"
log=/var/log/swarm-sandbox-dockerd.log
socket=/var/run/docker.sock

answers() { docker -H "unix://$socket" version --format '{{.Server.Version}}' >/dev/null 2>&1; }

ours() {
  [[ -s "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

case "${1:-}" in
  start)
    if answers; then echo running; exit 0; fi
    mkdir -p "$state_dir"
    # setsid: the engine must outlive the ansible task (or shell) that started it.
    setsid dockerd --pidfile /var/run/docker.pid --iptables=false >>"$log" 2>&1 </dev/null &
    echo $! > "$pidfile"
    for _ in $(seq 1 120); do
      if answers; then echo started; exit 0; fi
      if ! ours; then echo "host-dockerd: dockerd exited; see $log" >&2; rm -f "$pidfile"; exit 1; fi
      sleep 0.5
    done
    echo "host-dockerd: dockerd did not answer on $socket within 60 s; see $log" >&2
    exit 1
    ;;
  stop)
    if ! ours; then rm -f "$pidfile"; echo kept; exit 0; fi
    if [[ -n "$(docker -H "unix://$socket" ps -aq)" ]]; then echo kept; exit 0; fi
    pid="$(cat "$pidfile")"
    kill -TERM "$pid"
    for _ in $(seq 1 60); do
      if ! kill -0 "$pid" 2>/dev/null; then rm -f "$pidfile"; echo stopped; exit 0; fi
      sleep 0.5
    done
    echo "host-dockerd: dockerd (pid $pid) still runs 30 s after SIGTERM" >&2
    exit 1
    ;;
  *)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
