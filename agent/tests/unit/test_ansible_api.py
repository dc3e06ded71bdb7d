"""The swarm.cluster collection's pure logic: option values, options laid over a spec, convergence verdicts.

Specs "as the manager stores them" are produced with the agent's own models, so a
plan that is idempotent here is idempotent against the real API too.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from ansible_collections.swarm.cluster.plugins.module_utils._api import error_message, filters_query, socket_path
from ansible_collections.swarm.cluster.plugins.module_utils._convergence import removal_verdict, service_verdict
from ansible_collections.swarm.cluster.plugins.module_utils._service_spec import (
    SETTINGS,
    SpecError,
    given_settings,
    normalized,
    plan_service,
)
from ansible_collections.swarm.cluster.plugins.module_utils._units import nano_cpus, parse_duration, parse_size
from ansible_collections.swarm.cluster.plugins.modules.network import (
    NETWORK_OPTIONS,
    NetworkSpecError,
    plan_network,
    refusal,
)
from ansible_collections.swarm.cluster.plugins.modules.node import plan_node
from ansible_collections.swarm.cluster.plugins.modules.service import SERVICE_OPTIONS
from swarm_agent.api.models import NetworkSpec, ServiceSpec
from swarm_agent.api.networks import network_resource
from swarm_agent.manager import ipam

SECOND = 1_000_000_000


def stored(spec: dict[str, Any]) -> dict[str, Any]:
    """What the manager keeps (and inspect returns) after receiving ``spec``."""
    return ServiceSpec.model_validate(spec).wire()


def params(**given: Any) -> dict[str, Any]:
    """Module parameters as AnsibleModule hands them over: every option present, unset ones None."""
    out: dict[str, Any] = {name: spec.get("default") for name, spec in SERVICE_OPTIONS.items()}
    out.update(given)
    return out


FULL = params(
    name="web",
    image="local/busybox:1",
    replicas=2,
    command="httpd -f -p '80'",
    args=["-h", "/"],
    env={"MODE": "prod", "DEBUG": False, "N": 3},
    labels={"tier": "front"},
    container_labels={"team": "a"},
    hostname="web-host",
    user="nobody",
    working_dir="/srv",
    stop_signal="SIGINT",
    stop_grace_period="1m30s",
    read_only=True,
    hosts={"db.local": "10.0.0.5"},
    healthcheck={"test": "wget -q localhost", "interval": "30s", "timeout": "5s", "retries": 3, "start_period": None},
    mounts=[{"source": "data", "target": "/data", "type": "volume", "readonly": False, "labels": None,
             "propagation": None, "no_copy": True, "driver_config": None, "tmpfs_size": None, "tmpfs_mode": None},
            {"source": None, "target": "/scratch", "type": "tmpfs", "readonly": None, "labels": None,
             "propagation": None, "no_copy": None, "driver_config": None, "tmpfs_size": "64M", "tmpfs_mode": 0o1777}],
    secrets=[{"secret_name": "db_pw", "secret_id": "sid1", "filename": None, "uid": "0", "gid": "0", "mode": 0o400}],
    configs=[{"config_name": "site", "config_id": "cid1", "filename": "/etc/site.conf", "uid": "33", "gid": "33",
              "mode": 0o444}],
    placement={"constraints": ["node.role==worker"], "preferences": [{"spread": "node.labels.zone"}],
               "replicas_max_per_node": 1},
    publish=[{"published_port": 8080, "target_port": 80, "protocol": "tcp", "mode": None}],
    update_config={"parallelism": 2, "delay": "10s", "failure_action": "rollback", "monitor": "5s",
                   "max_failure_ratio": 0.25, "order": "start-first"},
    rollback_config={"parallelism": 1, "delay": None, "failure_action": None, "monitor": None,
                     "max_failure_ratio": None, "order": None},
    restart_config={"condition": "on-failure", "delay": "2s", "max_attempts": 3, "window": "1m"},
    limits={"cpus": 0.5, "memory": "64M"},
    reservations={"cpus": 0.25, "memory": "32M"},
    logging={"driver": "json-file", "options": {"max-size": "10m"}},
)


# ------------------------------------------------------------------ units


@pytest.mark.parametrize("text, ns", [
    ("1m30s", 90 * SECOND), ("10s", 10 * SECOND), ("500ms", SECOND // 2), ("1h", 3600 * SECOND),
    ("1.5s", 3 * SECOND // 2), ("0", 0), ("0s", 0), ("2us", 2000),
])
def test_durations_in_go_notation(text: str, ns: int) -> None:
    assert parse_duration(text) == ns


@pytest.mark.parametrize("text", ["10", "", "ten seconds", "1m30", "5d"])
def test_durations_without_a_unit_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


@pytest.mark.parametrize("text, size", [
    ("64M", 64 * 1024 ** 2), ("64m", 64 * 1024 ** 2), ("64MB", 64 * 1024 ** 2), ("64MiB", 64 * 1024 ** 2),
    ("1.5G", 3 * 1024 ** 3 // 2), ("512k", 512 * 1024), ("100", 100), (100, 100), ("7b", 7),
])
def test_sizes_in_binary_units(text: Any, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["64X", "lots", "-1M", True])
def test_bad_sizes_are_refused(text: Any) -> None:
    with pytest.raises(ValueError, match="invalid size"):
        parse_size(text)


def test_cpus_become_nano_cpus() -> None:
    assert nano_cpus(0.5) == 500_000_000
    assert nano_cpus("2") == 2_000_000_000
    with pytest.raises(ValueError):
        nano_cpus(-1)


# ------------------------------------------------------------------ api helpers


def test_socket_accepts_docker_host_form() -> None:
    assert socket_path("unix:///run/swarm/swarm.sock") == "/run/swarm/swarm.sock"
    assert socket_path("/tmp/x.sock") == "/tmp/x.sock"
    with pytest.raises(ValueError, match="unix socket"):
        socket_path("tcp://10.0.0.1:2375")


def test_filters_are_lists_of_strings() -> None:
    assert filters_query({"service": "abc", "desired-state": ["running"], "id": [1]}) == (
        '{"desired-state": ["running"], "id": ["1"], "service": ["abc"]}'
    )


def test_docker_error_bodies_pass_on_unchanged() -> None:
    body = b'{"message": "invalid service spec: TaskTemplate.Placement.Constraints: bad key"}'
    assert error_message(400, body) == "invalid service spec: TaskTemplate.Placement.Constraints: bad key"
    assert error_message(502, b"Bad Gateway") == "Bad Gateway"
    assert error_message(500, b"") == "the API answered HTTP 500 with no message"


# ------------------------------------------------------------------ options to a spec


def test_every_setting_belongs_to_a_documented_option() -> None:
    for setting in SETTINGS:
        option, _, sub = setting.option.partition(".")
        assert option in SERVICE_OPTIONS, setting.option
        if sub:
            assert sub in SERVICE_OPTIONS[option]["options"], setting.option


def test_create_maps_options_to_wire_names() -> None:
    plan = plan_service("web", None, FULL)
    spec = plan.spec
    container = spec["TaskTemplate"]["ContainerSpec"]
    assert spec["Name"] == "web"
    assert spec["Mode"] == {"Replicated": {"Replicas": 2}}
    assert container["Image"] == "local/busybox:1"
    assert container["Command"] == ["httpd", "-f", "-p", "80"]
    assert container["Args"] == ["-h", "/"]
    assert container["Env"] == ["MODE=prod", "DEBUG=false", "N=3"]
    assert container["Dir"] == "/srv"
    assert container["StopGracePeriod"] == 90 * SECOND
    assert container["Hosts"] == ["10.0.0.5 db.local"]
    assert container["HealthCheck"] == {
        "Test": ["CMD-SHELL", "wget -q localhost"], "Interval": 30 * SECOND, "Timeout": 5 * SECOND, "Retries": 3,
    }
    assert container["Mounts"] == [
        {"Target": "/data", "Type": "volume", "Source": "data", "ReadOnly": False, "VolumeOptions": {"NoCopy": True}},
        {"Target": "/scratch", "Type": "tmpfs", "TmpfsOptions": {"SizeBytes": 64 * 1024 ** 2, "Mode": 0o1777}},
    ]
    assert container["Secrets"] == [{"SecretID": "sid1", "SecretName": "db_pw",
                                     "File": {"Name": "db_pw", "UID": "0", "GID": "0", "Mode": 0o400}}]
    assert container["Configs"] == [{"ConfigID": "cid1", "ConfigName": "site",
                                     "File": {"Name": "/etc/site.conf", "UID": "33", "GID": "33", "Mode": 0o444}}]
    task = spec["TaskTemplate"]
    assert task["Placement"] == {
        "Constraints": ["node.role==worker"],
        "Preferences": [{"Spread": {"SpreadDescriptor": "node.labels.zone"}}],
        "MaxReplicas": 1,
    }
    assert task["RestartPolicy"] == {"Condition": "on-failure", "Delay": 2 * SECOND, "MaxAttempts": 3, "Window": 60 * SECOND}
    assert task["Resources"] == {
        "Limits": {"NanoCPUs": 500_000_000, "MemoryBytes": 64 * 1024 ** 2},
        "Reservations": {"NanoCPUs": 250_000_000, "MemoryBytes": 32 * 1024 ** 2},
    }
    assert task["LogDriver"] == {"Name": "json-file", "Options": {"max-size": "10m"}}
    assert spec["EndpointSpec"]["Ports"] == [
        {"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "ingress"}
    ]
    assert spec["UpdateConfig"] == {
        "Parallelism": 2, "Delay": 10 * SECOND, "FailureAction": "rollback", "Monitor": 5 * SECOND,
        "MaxFailureRatio": 0.25, "Order": "start-first",
    }
    assert spec["RollbackConfig"] == {"Parallelism": 1}
    assert not plan.rebuild
    assert "replicas" in plan.changes and "placement.constraints" in plan.changes
    assert "rollback_config.delay" not in plan.changes  # not given


def test_the_manager_accepts_the_spec_and_a_second_plan_changes_nothing() -> None:
    current = stored(plan_service("web", None, FULL).spec)
    again = plan_service("web", current, FULL)
    assert again.changes == []
    assert normalized(again.spec) == normalized(current)


def test_create_without_image_is_refused() -> None:
    with pytest.raises(SpecError, match="image is required"):
        plan_service("web", None, params(name="web", replicas=2))


def test_unset_options_keep_the_current_values() -> None:
    current = stored(plan_service("web", None, FULL).spec)
    plan = plan_service("web", current, params(name="web", replicas=5, env=["MODE=test"]))
    assert sorted(plan.changes) == ["env", "replicas"]
    expected = copy.deepcopy(current)
    expected["Mode"]["Replicated"]["Replicas"] = 5
    expected["TaskTemplate"]["ContainerSpec"]["Env"] = ["MODE=test"]
    assert plan.spec == expected


def test_sub_options_left_unset_keep_their_values() -> None:
    current = stored(plan_service("web", None, FULL).spec)
    plan = plan_service("web", current, params(name="web", update_config={"parallelism": 4, "delay": None}))
    assert plan.changes == ["update_config.parallelism"]
    assert plan.spec["UpdateConfig"]["Delay"] == 10 * SECOND
    assert plan.spec["UpdateConfig"]["Parallelism"] == 4


def test_empty_values_equal_unset_ones() -> None:
    current = stored(plan_service("web", None, params(name="web", image="img")).spec)
    plan = plan_service("web", current, params(name="web", labels={}, placement={"constraints": []}))
    assert plan.changes == []


def test_replicas_minus_one_keeps_the_count() -> None:
    current = stored(plan_service("web", None, FULL).spec)
    plan = plan_service("web", current, params(name="web", replicas=-1))
    assert plan.changes == [] and plan.spec["Mode"] == {"Replicated": {"Replicas": 2}}


def test_mode_change_rebuilds_the_service() -> None:
    current = stored(plan_service("web", None, FULL).spec)
    plan = plan_service("web", current, params(name="web", mode="global"))
    assert plan.rebuild and plan.changes == ["mode"]
    assert plan.spec["Mode"] == {"Global": {}}
    with pytest.raises(SpecError, match="replicas"):
        plan_service("web", current, params(name="web", mode="global", replicas=3))


def test_force_update_bumps_the_counter_every_time() -> None:
    current = stored(plan_service("web", None, FULL).spec)
    plan = plan_service("web", current, params(name="web", force_update=True))
    assert plan.changes == ["force_update"]
    assert plan.spec["TaskTemplate"]["ForceUpdate"] == current["TaskTemplate"]["ForceUpdate"] + 1


@pytest.mark.parametrize("given, option", [
    ({"stop_grace_period": "10"}, "stop_grace_period"),
    ({"update_config": {"delay": "soon"}}, "update_config.delay"),
    ({"limits": {"memory": "lots"}}, "limits.memory"),
    ({"env": ["=x"]}, "env"),
    ({"env": "A=1"}, "env"),
    ({"placement": {"preferences": [{"pack": "x"}]}}, "placement.preferences"),
])
def test_bad_values_name_the_option(given: dict[str, Any], option: str) -> None:
    with pytest.raises(SpecError, match=option.replace(".", r"\.")):
        plan_service("web", None, params(name="web", image="img", **given))


def test_given_settings_skip_unset_sub_options() -> None:
    given = [s.option for s, _ in given_settings(params(name="web", healthcheck={"test": None, "retries": 2}))]
    assert given == ["healthcheck.retries"]


# ------------------------------------------------------------------ nodes


NODE = {"Name": None, "Labels": {"zone": "a", "disk": "hdd"}, "Role": "worker", "Availability": "active"}


def test_node_labels_merge_replace_and_remove() -> None:
    merged, changes = plan_node(NODE, {"labels": {"disk": "ssd"}, "labels_state": "merge"})
    assert merged["Labels"] == {"zone": "a", "disk": "ssd"} and changes == ["labels"]
    replaced, _ = plan_node(NODE, {"labels": {"rack": "1"}, "labels_state": "replace"})
    assert replaced["Labels"] == {"rack": "1"}
    removed, _ = plan_node(NODE, {"labels_state": "merge", "labels_to_remove": ["zone", "nope"]})
    assert removed["Labels"] == {"disk": "hdd"}
    cleared, _ = plan_node(NODE, {"labels_state": "replace"})
    assert cleared["Labels"] == {}


def test_node_unchanged_options_report_no_change() -> None:
    spec, changes = plan_node(NODE, {"labels": {"zone": "a"}, "labels_state": "merge", "availability": "active"})
    assert changes == [] and spec == NODE
    spec, changes = plan_node(NODE, {"labels_state": "merge", "availability": "drain", "role": "manager"})
    assert changes == ["availability", "role"]
    assert spec["Availability"] == "drain" and spec["Role"] == "manager" and spec["Labels"] == NODE["Labels"]


# ------------------------------------------------------------------ networks


def network_params(**given: Any) -> dict[str, Any]:
    out: dict[str, Any] = {name: spec.get("default") for name, spec in NETWORK_OPTIONS.items()}
    out.update(given)
    return out


def inspected(body: dict[str, Any]) -> dict[str, Any]:
    """What ``GET /networks/NAME`` shows after the manager created a network from ``body``."""
    network = ipam.plan_network("n1", NetworkSpec.model_validate(body), ["10.0.0.0/8"], 24, [], set())
    return network_resource(network)


NET = network_params(name="backend", attachable=True, internal=True, ipam_config=[{"subnet": "10.9.0.0/24",
                     "gateway": None}], labels={"app": "shop", "tier": 2})


def test_network_create_body_and_a_second_plan_changes_nothing() -> None:
    plan = plan_network("backend", None, NET)
    assert plan.spec == {"Name": "backend", "Driver": "overlay", "Scope": "swarm", "Attachable": True,
                         "Internal": True, "IPAM": {"Driver": "default", "Config": [{"Subnet": "10.9.0.0/24"}]},
                         "Labels": {"app": "shop", "tier": "2"}}
    current = inspected(plan.spec)
    again = plan_network("backend", current, NET)
    assert again.differences == []
    assert again.spec["IPAM"]["Config"] == [{"Subnet": "10.9.0.0/24", "Gateway": "10.9.0.1"}]


def test_network_options_left_unset_are_not_compared() -> None:
    current = inspected(plan_network("backend", None, NET).spec)
    assert plan_network("backend", current, network_params(name="backend")).differences == []
    # The subnet the manager chose for a network created without one is not a difference either.
    chosen = inspected(plan_network("plain", None, network_params(name="plain")).spec)
    assert plan_network("plain", chosen, network_params(name="plain", internal=False)).differences == []


def test_network_differences_name_each_setting() -> None:
    current = inspected(plan_network("backend", None, NET).spec)
    wanted = network_params(name="backend", internal=False, labels={"app": "shop"},
                            ipam_config=[{"subnet": "10.8.0.0/24", "gateway": "10.9.0.1"}])
    plan = plan_network("backend", current, wanted)
    assert [d.option for d in plan.differences] == ["internal", "ipam_config[0].subnet", "labels"]
    assert plan.spec["Internal"] is False and plan.spec["Labels"] == {"app": "shop"}
    assert plan.spec["IPAM"]["Config"] == [{"Subnet": "10.8.0.0/24", "Gateway": "10.9.0.1"}]
    message = refusal("backend", plan.differences)
    assert "internal (True, asked False)" in message and "ipam_config[0].subnet ('10.9.0.0/24', asked" in message
    assert "force=true" in message


def test_network_addresses_compare_in_canonical_form() -> None:
    current = inspected(plan_network("backend", None, NET).spec)
    same = network_params(name="backend", ipam_config=[{"subnet": "10.9.0.0/255.255.255.0", "gateway": "10.9.0.1"}])
    assert plan_network("backend", current, same).differences == []


def test_network_takes_one_subnet() -> None:
    two = network_params(name="backend", ipam_config=[{"subnet": "10.1.0.0/24", "gateway": None},
                                                      {"subnet": "10.2.0.0/24", "gateway": None}])
    with pytest.raises(NetworkSpecError, match="ipam_config: an overlay network takes one subnet, got 2"):
        plan_network("backend", None, two)


# ------------------------------------------------------------------ convergence


def task(state: str, template: dict[str, Any], name: str = "web.1", err: str | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"State": state}
    if err:
        status["Err"] = err
    return {"ID": "t" + name, "Name": name, "Spec": template, "Status": status, "DesiredState": "running"}


@pytest.fixture
def service() -> dict[str, Any]:
    spec = stored(plan_service("web", None, params(name="web", image="img", replicas=2)).spec)
    return {"ID": "s1", "Spec": spec}


def test_converged_when_all_tasks_run_the_current_template(service: dict[str, Any]) -> None:
    template = service["Spec"]["TaskTemplate"]
    verdict = service_verdict(service, [task("running", template, "web.1"), task("running", template, "web.2")],
                              2, template)
    assert verdict.done and "2 of 2" in verdict.reason


def test_pending_task_reports_why(service: dict[str, Any]) -> None:
    template = service["Spec"]["TaskTemplate"]
    tasks = [task("running", template, "web.1"),
             task("pending", template, "web.2", err="no suitable node (scheduling constraints not satisfied)")]
    verdict = service_verdict(service, tasks, 2, template)
    assert not verdict.done and not verdict.hopeless
    assert "1 of 2 tasks running" in verdict.reason
    assert "task web.2 is pending: no suitable node (scheduling constraints not satisfied)" in verdict.reason


def test_tasks_of_the_previous_spec_are_not_converged(service: dict[str, Any]) -> None:
    template = service["Spec"]["TaskTemplate"]
    old = copy.deepcopy(template)
    old["ContainerSpec"]["Env"] = ["OLD=1"]
    verdict = service_verdict(service, [task("running", template), task("running", old, "web.2")], 2, template)
    assert not verdict.done and "previous spec" in verdict.reason


def test_paused_update_is_hopeless(service: dict[str, Any]) -> None:
    template = service["Spec"]["TaskTemplate"]
    service["UpdateStatus"] = {"State": "paused", "Message": "update paused due to failure or early termination"}
    verdict = service_verdict(service, [], 2, template)
    assert verdict.hopeless and "paused" in verdict.reason


def test_rolled_back_template_is_hopeless(service: dict[str, Any]) -> None:
    expected = copy.deepcopy(service["Spec"]["TaskTemplate"])
    expected["ContainerSpec"]["Image"] = "img:new"
    service["UpdateStatus"] = {"State": "rollback_completed", "Message": "rollback completed"}
    verdict = service_verdict(service, [], 2, expected)
    assert verdict.hopeless and "rollback completed" in verdict.reason


def test_removal_waits_for_live_tasks() -> None:
    template = {"ContainerSpec": {"Image": "img"}}
    assert not removal_verdict("web", [task("running", template), task("shutdown", template, "web.2")]).done
    assert removal_verdict("web", [task("shutdown", template), task("failed", template, "web.2")]).done
