#!/usr/bin/env python3
"""The walkthrough of a typical Swarm demo on a sandbox cluster of this machine.

Four test hosts (network namespaces, each with its own Docker engine) run
``swarmd``; every step is an ordinary ``docker`` command against the first
host's manager socket, printed with its output. Everything is removed at the end.
"""

import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "agent" / "tests"))

from harness.cluster import HOSTNAME_WEB, SwarmNode, http_get, wait_for  # noqa: E402
from harness.hosts import Lab  # noqa: E402
from harness.image import busybox_image  # noqa: E402

WEB = ["httpd", "-f", "-p", "80", "-h", "/"]


def say(text: str) -> None:
    print(f"\n### {text}", flush=True)


def run(node: SwarmNode, *args: str) -> str:
    print(f"\n{node.name}$ docker {shlex.join(args)}", flush=True)
    result = node.docker(*args, check=False)
    output = condense(result.stdout + result.stderr)
    if output:
        print(output, flush=True)
    if result.returncode != 0:
        raise SystemExit(f"demo: docker {shlex.join(args)} failed with {result.returncode}")
    return result.stdout


def condense(output: str) -> str:
    """Without a terminal the CLI prints its progress display line by line; keep the last of each kind."""
    lines = output.rstrip().splitlines()
    keep = []
    for i, line in enumerate(lines):
        kind = line.split(":", 1)[0]
        if kind in ("overall progress", "verify") and any(l.split(":", 1)[0] == kind for l in lines[i + 1:]):
            continue
        keep.append(line)
    return "\n".join(keep)


def running(manager: SwarmNode, service: str) -> int:
    out = manager.docker("service", "ls", "--filter", f"name={service}", "--format", "{{.Name}} {{.Replicas}}").stdout
    for line in out.splitlines():
        name, replicas = line.split()
        if name == service:
            return int(replicas.split("/")[0])
    return 0


def main() -> None:
    lab = Lab(Path(tempfile.mkdtemp(prefix="swd-", dir="/tmp")))
    try:
        say("Four sandbox hosts, each with its own Docker engine (engine label zone=lab)")
        image, archive = busybox_image(Path("/var/tmp/swarm-test-cache"))
        hosts = lab.add_hosts("manager1", "worker1", "worker2", "worker3", engine_labels={"zone": "lab"})
        nodes = [SwarmNode(h) for h in hosts]
        for host, node in zip(hosts, nodes):
            host.load_image(archive)
            node.start()
            print(f"  {host.name}: {host.ip}, swarmd socket {node.socket}")
        manager, workers = nodes[0], nodes[1:]

        say("Create the swarm and join the workers")
        run(manager, "swarm", "init", "--advertise-addr", manager.host.ip)
        token = manager.docker("swarm", "join-token", "-q", "worker").stdout.strip()
        for worker in workers:
            run(worker, "swarm", "join", "--token", token, manager.addr)
        wait_for("all nodes ready", lambda: manager.docker("node", "ls").stdout.count("Ready") == 4)
        run(manager, "node", "ls")

        say("A global service: one task on every node")
        run(manager, "service", "create", "--name", "monitor", "--mode", "global", image, *WEB)
        run(manager, "service", "ps", "monitor")

        say("A replicated service, scaled, and one constrained to workers")
        run(manager, "service", "create", "--name", "web", "--replicas", "2", image, *WEB)
        run(manager, "service", "create", "--name", "crunch", "--replicas", "3",
            "--constraint", "node.role==worker", image, "sleep", "3600")
        run(manager, "service", "ps", "crunch")
        run(manager, "service", "scale", "crunch=1")
        run(manager, "service", "ls")
        run(manager, "service", "inspect", "--pretty", "web")

        say("Update a service: the tasks are replaced one by one")
        run(manager, "service", "update", "--env-add", "GREETING=hello", "web")
        run(manager, "service", "ps", "web")

        say("An overlay network, a service published on 8080, and port 8080 answering on every node")
        run(manager, "network", "create", "-d", "overlay", "mynet")
        run(manager, "service", "create", "--name", "frontend", "--replicas", "3", "--network", "mynet",
            "--publish", "published=8080,target=80", image, *HOSTNAME_WEB)
        run(manager, "service", "create", "--name", "client", "--network", "mynet", image, "sleep", "3600")
        wait_for("frontend and client running", lambda: running(manager, "frontend") == 3
                 and running(manager, "client") == 1, timeout=120)
        run(manager, "network", "ls")
        for node in nodes:
            wait_for(f"8080 on {node.name}", lambda: http_get(node.host.ip, 8080) is not None, timeout=60)
            answers = sorted({http_get(node.host.ip, 8080) or "(failed)" for _ in range(12)})
            print(f"  curl http://{node.host.ip}:8080/ (x12) answered by tasks: {', '.join(answers)}")
        say("Service discovery from a task on mynet: the name gives the VIP, tasks.NAME the tasks")
        holder, container = next((n, c) for n in nodes for c in n.host.docker(
            "ps", "--filter", "label=com.docker.swarm.service.name=client", "--format", "{{.Names}}"
        ).stdout.decode().split())
        for name in ("frontend", "tasks.frontend"):
            out = holder.host.docker("exec", container, "nslookup", name).stdout.decode()
            print(f"  {holder.name}: {container[:18]}... $ nslookup {name}\n    "
                  + "\n    ".join(line for line in out.splitlines() if line.startswith(("Name", "Address"))))

        say("Remove the global service")
        run(manager, "service", "rm", "monitor")

        say("Drain a worker: its tasks move; set it active: nothing moves back")
        run(manager, "service", "create", "--name", "app", "--replicas", "4", image, *WEB)
        run(manager, "node", "update", "--availability", "drain", "worker1")
        wait_for("app off worker1", lambda: "worker1" not in manager.docker(
            "service", "ps", "app", "--filter", "desired-state=running", "--format", "{{.Node}}").stdout
            and running(manager, "app") == 4)
        run(manager, "node", "ls")
        run(manager, "service", "ps", "app")
        run(manager, "node", "update", "--availability", "active", "worker1")

        say("Kill worker2 outright (agent and engine): it turns Down and its tasks run elsewhere")
        start = time.monotonic()
        workers[1].kill()
        workers[1].host.stop_engine(signal.SIGKILL)
        wait_for("worker2 down", lambda: "Down" in manager.docker("node", "ls").stdout, timeout=60)
        wait_for("app back to 4", lambda: running(manager, "app") == 4 and "worker2" not in manager.docker(
            "service", "ps", "app", "--filter", "desired-state=running", "--format", "{{.Node}}").stdout, timeout=60)
        print(f"\n  (recovered in {time.monotonic() - start:.1f} s)")
        run(manager, "node", "ls")
        run(manager, "service", "ps", "app")

        say("A down node can be removed; a worker can be promoted to manager and demoted again")
        run(manager, "node", "rm", "worker2")
        run(manager, "node", "promote", "worker3")
        wait_for("worker3 reachable", lambda: "Reachable" in manager.docker("node", "ls").stdout, timeout=60)
        run(manager, "node", "ls")
        run(workers[2], "node", "ps", "worker3")
        run(manager, "node", "demote", "worker3")
        wait_for("worker3 a worker again", lambda: workers[2].docker(
            "info", "--format", "{{.Swarm.ControlAvailable}}").stdout.strip() == "false", timeout=60)
        run(manager, "node", "inspect", "--pretty", "worker3")

        say("What the docker CLI has no verb for")
        print(f"\n{manager.name}$ swarmctl -H unix://{manager.socket} status", flush=True)
        subprocess.run([sys.executable, "-m", "swarm_agent.cli.swarmctl", "-H", f"unix://{manager.socket}", "status"],
                       check=True)
        say("Done; removing the sandbox hosts")
    except BaseException:
        for host in lab.hosts:
            print(f"\n===== agent log of {host.name} (last lines) =====\n{host.logs('swarmd')[-3000:]}", file=sys.stderr)
        raise
    finally:
        lab.cleanup()


if __name__ == "__main__":
    main()
