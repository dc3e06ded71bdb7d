#!/usr/bin/env python3
"""This project beside real Docker Swarm, on the same sandbox nodes, one after the other in one run.

Four sandbox nodes (playbooks/sandbox.yml: containers with systemd and a docker.io engine of their own), one
manager (drained, so tasks run on the three workers) and three workers. The same ``docker`` commands, run by the
CLI inside the manager node, first against real Docker Swarm (``docker swarm init`` on the inner engines), then,
once every engine has left its swarm, against this project's cluster built by playbooks/site.yml on the same
nodes (``docker -H unix:///run/swarm/swarm.sock``). Figures:
- create: ``service create --replicas N`` until all N tasks run;
- update: ``service update --image`` of those N tasks (parallelism 5, delay 0, monitor 5 s) until all run the
  new image, and until the update reads ``completed``;
- mesh: a 3-replica service published on 8080; whether a request to each node's address answers;
- failover: a worker's node killed outright (``docker kill`` of its container) until all N run elsewhere;
- scale: N to ``--scale-to`` on the two workers left, until all run.
A table follows: each figure for both systems, their ratio (this project / Swarm) and the goal of
SWARM-FEATURES.md. The services are busybox httpd (HOSTNAME_WEB of the tests' harness) named by image ID (see
Images). The sandbox is removed at the end, also after a failure.

Run as root from the repository root: ``.venv/bin/python bench/peer_swarm.py [--replicas N] [--scale-to M]``.
The nodes have a prefix, network and subnet of their own (peer-, 172.28.253.0/24), so other sandboxes are left alone.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "agent" / "tests"))

from core_timings import running_per_node  # noqa: E402
from harness.cluster import HOSTNAME_WEB, http_get, wait_for  # noqa: E402
from update_bench import NEW_IMAGE, new_and_running  # noqa: E402

ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
PREFIX = "peer-"
SUBNET_BASE = "172.28.253."
MANAGER = f"{PREFIX}m1"
WORKERS = [f"{PREFIX}w{i}" for i in (1, 2, 3)]
VICTIM = WORKERS[-1]
# playbooks/sandbox.yml puts managers at .11, .12, ... and workers at .21, .22, ...
ADDRESSES = {MANAGER: SUBNET_BASE + "11", **{w: f"{SUBNET_BASE}{21 + i}" for i, w in enumerate(WORKERS)}}
IMAGE = "local/busybox:1"
MESH_PORT = 8080
# How long a node's published port may stay silent once the service's tasks run.
MESH_WAIT = 10.0
POLL = 0.2


class Manager:
    """The docker CLI inside the manager node, against one system's manager API (the same commands for both)."""

    def __init__(self, *host: str) -> None:
        self.argv = ["docker", "exec", MANAGER, "docker", *host]

    def docker(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        done = subprocess.run([*self.argv, *args], capture_output=True, text=True, timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(self.argv[4:] + list(args))} failed ({done.returncode}): "
                               f"{done.stdout}{done.stderr}")
        return done


@dataclass
class Figures:
    """What one system measured: seconds per figure, or what happened where a number makes no sense."""

    create: float = 0.0
    update_running: float = 0.0
    update_completed: float = 0.0
    mesh: str = ""
    failover: float = 0.0
    scale: float = 0.0
    setup: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Images:
    """Image IDs, the same in every node. Services name their image by ID: Swarm's workers then run it without
    trying to pull it first (they do for a tag, even one they have, and with no registry reachable each try
    costs 10-20 s, most of every Swarm figure); this project's agents never pull."""

    first: str
    update: str


def run(*argv: str, timeout: float = 120, input: str | bytes | None = None, text: bool = True,
        check: bool = True) -> Any:
    """``argv``'s output: str, or bytes with ``text=False`` or bytes ``input``."""
    text = text and not isinstance(input, bytes)
    done = subprocess.run(argv, capture_output=True, text=text, timeout=timeout, check=False, input=input)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout[-4000:]!s}\n"
                           f"{done.stderr[-4000:]!s}")
    return done.stdout


def in_node(node: str, *args: str, timeout: float = 120, text: bool = True, check: bool = True) -> Any:
    """The docker CLI inside ``node`` against its own (inner) engine."""
    return run("docker", "exec", node, "docker", *args, timeout=timeout, text=text, check=check)


def timed(what: Callable[[], object]) -> float:
    start = time.monotonic()
    what()
    return time.monotonic() - start


class Sandbox:
    """The peer- sandbox nodes, built and removed by playbooks/sandbox.yml; its inventory in a directory of its own."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.inventory = workdir / "hosts.yml"
        self.extra = ["-e", f"sandbox_prefix={PREFIX}", "-e", f"sandbox_network={PREFIX}sandbox",
                      "-e", f"sandbox_subnet={SUBNET_BASE}0/24", "-e", f"sandbox_inventory={self.inventory}",
                      "-e", "managers=1", "-e", f"workers={len(WORKERS)}"]

    def playbook(self, *args: str) -> None:
        env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_LOCAL_TEMP=str(self.workdir / "ansible-tmp"))
        done = subprocess.run([str(ANSIBLE_PLAYBOOK), *args], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=1800, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"ansible-playbook {' '.join(args)} failed ({done.returncode}):\n"
                               f"{done.stdout[-6000:]}\n{done.stderr[-3000:]}")

    def create(self) -> Images:
        self.playbook("playbooks/sandbox.yml", *self.extra)
        # The update's target: a child of the test image (another ID), built once and loaded into every node.
        run("docker", "exec", "-i", MANAGER, "docker", "build", "-q", "-t", NEW_IMAGE, "-",
            input=f"FROM {IMAGE}\nLABEL swarm.bench.peer=update\n")
        archive = in_node(MANAGER, "save", NEW_IMAGE, text=False)
        for worker in WORKERS:
            run("docker", "exec", "-i", worker, "docker", "load", input=archive)
        image_id = ["image", "inspect", "--format", "{{.Id}}"]
        return Images(in_node(MANAGER, *image_id, IMAGE).strip(), in_node(MANAGER, *image_id, NEW_IMAGE).strip())

    def site(self) -> None:
        self.playbook("-i", str(self.inventory), "playbooks/site.yml")

    def remove(self) -> None:
        try:
            self.playbook("playbooks/sandbox.yml", *self.extra, "-e", "state=absent")
        except RuntimeError as error:
            # Another sandbox's state=absent stops the machine's engine when it sees no container, which can
            # fall between the removal of these nodes and of their volumes; a second run starts the engine
            # again and removes what is left.
            print(f"removing the sandbox again after: {str(error).splitlines()[0]}", file=sys.stderr)
            self.playbook("playbooks/sandbox.yml", *self.extra, "-e", "state=absent")


def wait_nodes_ready(manager: Manager) -> None:
    def ready() -> bool:
        lines = manager.docker("node", "ls", "--format", "{{.Hostname}} {{.Status}}").stdout.split("\n")
        return sorted(line.split()[0] for line in lines if line.endswith(" Ready")) == sorted(ADDRESSES)
    wait_for("every node Ready", ready, timeout=120, interval=POLL)


def running(manager: Manager, service: str) -> int:
    return sum(running_per_node(manager, service).values())


def measure(manager: Manager, images: Images, replicas: int, scale_to: int, parallelism: int) -> Figures:
    """The figures on a cluster whose nodes are all Ready; the services it made are removed again."""
    figures = Figures()
    manager.docker("node", "update", "--availability", "drain", MANAGER)
    # --no-resolve-image: there is no registry to ask for the image's digest.
    create = ["service", "create", "--detach", "--no-resolve-image"]

    start = time.monotonic()
    manager.docker(*create, "--name", "bench", "--replicas", str(replicas),
                   "--update-parallelism", str(parallelism), "--update-delay", "0s", "--update-monitor", "5s",
                   images.first, *HOSTNAME_WEB)
    wait_for(f"{replicas} running", lambda: running(manager, "bench") == replicas, timeout=600, interval=POLL)
    figures.create = time.monotonic() - start
    print(f"  create {replicas} until all running: {figures.create:.1f} s", flush=True)

    start = time.monotonic()
    manager.docker("service", "update", "--detach", "--no-resolve-image", "--image", images.update, "bench")
    wait_for(f"{replicas} new and running", lambda: new_and_running(manager, "bench", images.update) == replicas,
             timeout=900, interval=POLL)
    figures.update_running = time.monotonic() - start
    wait_for("update completed", lambda: manager.docker(
        "service", "inspect", "--format", "{{.UpdateStatus.State}}", "bench").stdout.strip() == "completed",
        timeout=300, interval=POLL)
    figures.update_completed = time.monotonic() - start
    print(f"  rolling update: all new and running {figures.update_running:.1f} s, "
          f"completed {figures.update_completed:.1f} s", flush=True)

    manager.docker(*create, "--name", "mesh", "--replicas", "3", "--publish", f"published={MESH_PORT},target=80",
                   images.first, *HOSTNAME_WEB)
    wait_for("3 mesh tasks running", lambda: running(manager, "mesh") == 3, timeout=300, interval=POLL)
    figures.mesh = mesh_answers()
    print(f"  routing mesh: {figures.mesh}", flush=True)
    manager.docker("service", "rm", "mesh")
    # The kill is timed on its own: the mesh's tasks, stopping through their 10 s grace period, are gone first
    # (this project's workers start no new task while a stop is under way, which would add up to 10 s).
    wait_for("the mesh service's containers gone", lambda: not any(
        in_node(node, "ps", "-q", "--filter", "label=com.docker.swarm.service.name=mesh").split() for node in ADDRESSES),
        timeout=120, interval=POLL)

    start = time.monotonic()
    run("docker", "kill", VICTIM)
    wait_for(f"{replicas} running without {VICTIM}", lambda: (
        (counts := running_per_node(manager, "bench")) and VICTIM not in counts and sum(counts.values()) == replicas),
        timeout=600, interval=POLL)
    figures.failover = time.monotonic() - start
    print(f"  {VICTIM} killed until all {replicas} run on the others: {figures.failover:.1f} s", flush=True)

    start = time.monotonic()
    manager.docker("service", "scale", "--detach", f"bench={scale_to}")
    wait_for(f"{scale_to} running", lambda: running(manager, "bench") == scale_to, timeout=900, interval=POLL)
    figures.scale = time.monotonic() - start
    print(f"  scale {replicas} to {scale_to} on two workers: {figures.scale:.1f} s", flush=True)
    manager.docker("service", "rm", "bench")
    return figures


def mesh_answers() -> str:
    """Which nodes answer on the published port within MESH_WAIT seconds of the tasks running, and when."""
    start = time.monotonic()
    answered: dict[str, float] = {}
    while len(answered) < len(ADDRESSES) and time.monotonic() - start < MESH_WAIT:
        for node, ip in ADDRESSES.items():
            if node not in answered and http_get(ip, MESH_PORT, timeout=1) is not None:
                answered[node] = time.monotonic() - start
    silent = sorted(set(ADDRESSES) - set(answered))
    if not answered:
        return f"no node answers within {MESH_WAIT:.0f} s"
    said = f"{len(answered)}/{len(ADDRESSES)} nodes answer (last after {max(answered.values()):.1f} s)"
    return said + (f"; silent for {MESH_WAIT:.0f} s: {', '.join(silent)}" if silent else "")


def docker_swarm(images: Images, replicas: int, scale_to: int, parallelism: int) -> Figures:
    """Real Docker Swarm on the inner engines; every engine has left it again when this returns."""
    manager = Manager()
    start = time.monotonic()
    in_node(MANAGER, "swarm", "init", "--advertise-addr", ADDRESSES[MANAGER])
    token = in_node(MANAGER, "swarm", "join-token", "-q", "worker").strip()
    for worker in WORKERS:
        in_node(worker, "swarm", "join", "--token", token, f"{ADDRESSES[MANAGER]}:2377")
    wait_nodes_ready(manager)
    setup = time.monotonic() - start
    try:
        figures = measure(manager, images, replicas, scale_to, parallelism)
    finally:
        leave_swarm()
    figures.setup["swarm init and join"] = setup
    return figures


def leave_swarm() -> None:
    """Every inner engine out of swarm mode and without the tasks' containers, the killed node started again."""
    if "true" not in run("docker", "inspect", "--format", "{{.State.Running}}", VICTIM):
        run("docker", "start", VICTIM)
        wait_for(f"{VICTIM}'s engine", lambda: in_node(VICTIM, "version", "--format", "{{.Server.Version}}"),
                 timeout=120)
    for node in ADDRESSES:
        # The tasks' containers go first: httpd as PID 1 ignores SIGTERM, so Swarm stopping a hundred of them
        # takes their 10 s grace periods, and a leave meanwhile fails with "context deadline exceeded".
        containers = in_node(node, "ps", "-aq").split()
        if containers:
            in_node(node, "rm", "-f", *containers, timeout=600)
        wait_for(f"{node}'s engine out of swarm mode", lambda: left_swarm(node), timeout=300, interval=1)
        leftovers = in_node(node, "ps", "-aq").split()
        if leftovers:
            in_node(node, "rm", "-f", *leftovers, timeout=600)


def left_swarm(node: str) -> bool:
    """Whether ``node``'s engine is out of swarm mode after one more ``swarm leave --force`` (which may time out)."""
    in_node(node, "swarm", "leave", "--force", check=False)
    return in_node(node, "info", "--format", "{{.Swarm.LocalNodeState}}").strip() == "inactive"


def this_project(sandbox: Sandbox, images: Images, replicas: int, scale_to: int, parallelism: int) -> Figures:
    manager = Manager("-H", "unix:///run/swarm/swarm.sock")
    setup = timed(sandbox.site)
    wait_nodes_ready(manager)
    figures = measure(manager, images, replicas, scale_to, parallelism)
    figures.setup["site.yml (engines, agents, managers, workers)"] = setup
    return figures


def table(swarm: Figures, ours: Figures, replicas: int, scale_to: int, parallelism: int) -> list[str]:
    rows = [("figure", "Docker Swarm", "swarm (this project)", "ratio", "goal", "met")]

    def timing(name: str, theirs: float, mine: float, goal: float, goal_text: str) -> None:
        ratio = mine / theirs
        rows.append((name, f"{theirs:.1f} s", f"{mine:.1f} s", f"{ratio:.2f}", goal_text,
                     "yes" if ratio <= goal else "no"))

    timing(f"create {replicas} replicas until all running", swarm.create, ours.create, 0.75, "<= 0.75")
    timing(f"rolling update of {replicas} (parallelism {parallelism}, delay 0, monitor 5 s): all new running",
           swarm.update_running, ours.update_running, 1.0, "<= 1")
    timing("... until the update reads completed", swarm.update_completed, ours.update_completed, 1.0, "<= 1")
    timing(f"kill one of three workers until all {replicas} run on the others", swarm.failover, ours.failover,
           1 / 3, "< 1/3")
    timing(f"scale {replicas} to {scale_to} (two workers left)", swarm.scale, ours.scale, 0.75, "<= 0.75")
    every_node = f"{len(ADDRESSES)}/{len(ADDRESSES)} nodes answer"
    rows.append((f"request to a published port ({MESH_PORT}) on each node", swarm.mesh, ours.mesh, "-",
                 "answers on every node", "yes" if ours.mesh.startswith(every_node) else "no"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [" | ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, default=30)
    parser.add_argument("--scale-to", type=int, default=200)
    parser.add_argument("--parallelism", type=int, default=5)
    args = parser.parse_args()
    if args.scale_to <= args.replicas:
        parser.error(f"--scale-to ({args.scale_to}) must be more than --replicas ({args.replicas})")

    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    sandbox = Sandbox(Path(tempfile.mkdtemp(prefix="peer-swarm-", dir="/tmp")))
    try:
        start = time.monotonic()
        images = sandbox.create()
        print(f"sandbox: 1 manager and {len(WORKERS)} workers built in {time.monotonic() - start:.1f} s", flush=True)
        print("Docker Swarm:", flush=True)
        swarm = docker_swarm(images, args.replicas, args.scale_to, args.parallelism)
        print("swarm (this project):", flush=True)
        ours = this_project(sandbox, images, args.replicas, args.scale_to, args.parallelism)
    finally:
        sandbox.remove()
    for name, seconds in {**swarm.setup, **ours.setup}.items():
        print(f"setup: {name} {seconds:.1f} s")
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for line in table(swarm, ours, args.replicas, args.scale_to, args.parallelism):
        print(line)


if __name__ == "__main__":
    main()
