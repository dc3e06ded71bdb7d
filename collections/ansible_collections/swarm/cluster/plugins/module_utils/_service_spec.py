# Copyright: swarm developers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""The ``service`` module's options (community.docker's names) mapped onto a ServiceSpec (the API's names).

The desired spec is the current spec with only the given options laid over it:
unlike community.docker, an option left unset keeps what the service has, so a
play that only scales a service cannot undo what another play configured.
Values are written in the form the manager stores them (durations in
nanoseconds, defaults filled in), so that comparing the desired spec with the
current one tells whether anything would change.
"""

from __future__ import annotations

import copy
import shlex
from typing import Any, Callable, NamedTuple

from ansible_collections.swarm.cluster.plugins.module_utils._units import nano_cpus, parse_duration, parse_size

Path = tuple  # a tuple of ServiceSpec keys, e.g. ("TaskTemplate", "ContainerSpec", "Image")

CONTAINER: Path = ("TaskTemplate", "ContainerSpec")
PLACEMENT: Path = ("TaskTemplate", "Placement")
RESTART: Path = ("TaskTemplate", "RestartPolicy")
RESOURCES: Path = ("TaskTemplate", "Resources")
HEALTH: Path = CONTAINER + ("HealthCheck",)
DNS: Path = CONTAINER + ("DNSConfig",)
LOGGING: Path = ("TaskTemplate", "LogDriver")


class SpecError(ValueError):
    """An option value that cannot be turned into a spec; the message names the option."""


class Setting(NamedTuple):
    option: str  # the option as users write it: "image", "placement.constraints"
    path: Path
    convert: Callable[[Any], Any]


# ------------------------------------------------------------ value converters


def _string(value: Any) -> str:
    return str(value)


def _strings(value: Any) -> list[str]:
    return [str(v) for v in value]


def _integer(value: Any) -> int:
    return int(value)


def _ratio(value: Any) -> float:
    return float(value)


def _boolean(value: Any) -> bool:
    return bool(value)


def _text_value(value: Any) -> str:
    """YAML turns ``"true"`` written unquoted into a boolean; Docker wants the text the user meant."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _mapping(value: Any) -> dict[str, str]:
    return {str(k): _text_value(v) for k, v in dict(value).items()}


def _command(value: Any) -> list[str]:
    """A string is split as a shell would split it; a list is taken as is."""
    if isinstance(value, str):
        return shlex.split(value)
    return _strings(value)


def _env(value: Any) -> list[str]:
    if isinstance(value, dict):
        return ["%s=%s" % (k, _text_value(v)) for k, v in value.items()]
    if isinstance(value, str):
        raise SpecError("env must be a list of NAME=value or a dictionary, got the string %r" % value)
    items = _strings(value)
    for item in items:
        if "=" not in item or item.startswith("="):
            raise SpecError("env item %r is not of the form NAME=value" % item)
    return items


def _hosts(value: Any) -> list[str]:
    # The Engine API carries /etc/hosts lines: "IP name".
    return ["%s %s" % (ip, name) for name, ip in dict(value).items()]


def _health_test(value: Any) -> list[str]:
    if isinstance(value, str):
        return ["CMD-SHELL", value]
    return _strings(value)


def _preferences(value: Any) -> list[dict[str, Any]]:
    out = []
    for item in value:
        if not isinstance(item, dict) or set(item) != {"spread"}:
            raise SpecError("placement.preferences items must look like {spread: node.labels.zone}, got %r" % (item,))
        out.append({"Spread": {"SpreadDescriptor": str(item["spread"])}})
    return out


def _ports(value: Any) -> list[dict[str, Any]]:
    out = []
    for item in value:
        if item.get("target_port") is None:
            raise SpecError("publish items need target_port, got %r" % (item,))
        port: dict[str, Any] = {
            "Protocol": item.get("protocol") or "tcp",
            "TargetPort": int(item["target_port"]),
            "PublishMode": item.get("mode") or "ingress",
        }
        if item.get("published_port") is not None:
            port["PublishedPort"] = int(item["published_port"])
        out.append(port)
    return out


def _networks(value: Any) -> list[dict[str, Any]]:
    out = []
    for item in value:
        if isinstance(item, str):
            out.append({"Target": item})
            continue
        if not isinstance(item, dict) or not item.get("name"):
            raise SpecError("networks items must be a name or {name, aliases, options}, got %r" % (item,))
        network: dict[str, Any] = {"Target": str(item["name"])}
        if item.get("aliases"):
            network["Aliases"] = _strings(item["aliases"])
        if item.get("options"):
            network["DriverOpts"] = _mapping(item["options"])
        out.append(network)
    return out


def _mount(item: dict[str, Any]) -> dict[str, Any]:
    kind = item.get("type") or "bind"
    mount: dict[str, Any] = {"Target": str(item["target"]), "Type": kind}
    if item.get("source") is not None:
        mount["Source"] = str(item["source"])
    if item.get("readonly") is not None:
        mount["ReadOnly"] = bool(item["readonly"])
    if item.get("propagation") is not None:
        mount["BindOptions"] = {"Propagation": item["propagation"]}
    volume: dict[str, Any] = {}
    if item.get("no_copy") is not None:
        volume["NoCopy"] = bool(item["no_copy"])
    if item.get("labels"):
        volume["Labels"] = _mapping(item["labels"])
    driver = item.get("driver_config") or {}
    if driver.get("name") or driver.get("options"):
        volume["DriverConfig"] = {"Name": driver.get("name") or ""}
        if driver.get("options"):
            volume["DriverConfig"]["Options"] = _mapping(driver["options"])
    if volume:
        mount["VolumeOptions"] = volume
    tmpfs: dict[str, Any] = {}
    if item.get("tmpfs_size") is not None:
        tmpfs["SizeBytes"] = parse_size(item["tmpfs_size"])
    if item.get("tmpfs_mode") is not None:
        tmpfs["Mode"] = int(item["tmpfs_mode"])
    if tmpfs:
        mount["TmpfsOptions"] = tmpfs
    return mount


def _mounts(value: Any) -> list[dict[str, Any]]:
    out = []
    for item in value:
        if not isinstance(item, dict) or not item.get("target"):
            raise SpecError("mounts items need a target, got %r" % (item,))
        out.append(_mount(item))
    return out


def _file_references(kind: str) -> Callable[[Any], list[dict[str, Any]]]:
    """``secrets`` / ``configs`` items as the manager stores them: ID, name and the file with its defaults."""
    capital = kind.capitalize()

    def convert(value: Any) -> list[dict[str, Any]]:
        out = []
        for item in value:
            if not isinstance(item, dict) or not item.get(kind + "_name"):
                raise SpecError("%ss items need a %s_name, got %r" % (kind, kind, item))
            name = str(item[kind + "_name"])
            out.append({
                capital + "ID": str(item.get(kind + "_id") or ""),
                capital + "Name": name,
                "File": {
                    "Name": str(item.get("filename") or name),
                    "UID": str(item["uid"]) if item.get("uid") is not None else "0",
                    "GID": str(item["gid"]) if item.get("gid") is not None else "0",
                    "Mode": _integer(item["mode"]) if item.get("mode") is not None else 0o444,
                },
            })
        return out

    return convert


def _update_settings(option: str, base: Path) -> list[Setting]:
    return [
        Setting(option + ".parallelism", base + ("Parallelism",), _integer),
        Setting(option + ".delay", base + ("Delay",), parse_duration),
        Setting(option + ".failure_action", base + ("FailureAction",), _string),
        Setting(option + ".monitor", base + ("Monitor",), parse_duration),
        Setting(option + ".max_failure_ratio", base + ("MaxFailureRatio",), _ratio),
        Setting(option + ".order", base + ("Order",), _string),
    ]


def _resource_settings(option: str, base: Path) -> list[Setting]:
    return [
        Setting(option + ".cpus", base + ("NanoCPUs",), nano_cpus),
        Setting(option + ".memory", base + ("MemoryBytes",), parse_size),
    ]


SETTINGS: list[Setting] = [
    Setting("image", CONTAINER + ("Image",), _string),
    Setting("command", CONTAINER + ("Command",), _command),
    Setting("args", CONTAINER + ("Args",), _strings),
    Setting("env", CONTAINER + ("Env",), _env),
    Setting("labels", ("Labels",), _mapping),
    Setting("container_labels", CONTAINER + ("Labels",), _mapping),
    Setting("hostname", CONTAINER + ("Hostname",), _string),
    Setting("user", CONTAINER + ("User",), _string),
    Setting("working_dir", CONTAINER + ("Dir",), _string),
    Setting("groups", CONTAINER + ("Groups",), _strings),
    Setting("stop_signal", CONTAINER + ("StopSignal",), _string),
    Setting("stop_grace_period", CONTAINER + ("StopGracePeriod",), parse_duration),
    Setting("read_only", CONTAINER + ("ReadOnly",), _boolean),
    Setting("tty", CONTAINER + ("TTY",), _boolean),
    Setting("init", CONTAINER + ("Init",), _boolean),
    Setting("hosts", CONTAINER + ("Hosts",), _hosts),
    Setting("sysctls", CONTAINER + ("Sysctls",), _mapping),
    Setting("cap_add", CONTAINER + ("CapabilityAdd",), _strings),
    Setting("cap_drop", CONTAINER + ("CapabilityDrop",), _strings),
    Setting("dns", DNS + ("Nameservers",), _strings),
    Setting("dns_search", DNS + ("Search",), _strings),
    Setting("dns_options", DNS + ("Options",), _strings),
    Setting("mounts", CONTAINER + ("Mounts",), _mounts),
    Setting("secrets", CONTAINER + ("Secrets",), _file_references("secret")),
    Setting("configs", CONTAINER + ("Configs",), _file_references("config")),
    Setting("healthcheck.test", HEALTH + ("Test",), _health_test),
    Setting("healthcheck.interval", HEALTH + ("Interval",), parse_duration),
    Setting("healthcheck.timeout", HEALTH + ("Timeout",), parse_duration),
    Setting("healthcheck.retries", HEALTH + ("Retries",), _integer),
    Setting("healthcheck.start_period", HEALTH + ("StartPeriod",), parse_duration),
    Setting("placement.constraints", PLACEMENT + ("Constraints",), _strings),
    Setting("placement.preferences", PLACEMENT + ("Preferences",), _preferences),
    Setting("placement.replicas_max_per_node", PLACEMENT + ("MaxReplicas",), _integer),
    Setting("restart_config.condition", RESTART + ("Condition",), _string),
    Setting("restart_config.delay", RESTART + ("Delay",), parse_duration),
    Setting("restart_config.max_attempts", RESTART + ("MaxAttempts",), _integer),
    Setting("restart_config.window", RESTART + ("Window",), parse_duration),
    *_resource_settings("limits", RESOURCES + ("Limits",)),
    *_resource_settings("reservations", RESOURCES + ("Reservations",)),
    Setting("logging.driver", LOGGING + ("Name",), _string),
    Setting("logging.options", LOGGING + ("Options",), _mapping),
    Setting("networks", ("TaskTemplate", "Networks"), _networks),
    Setting("publish", ("EndpointSpec", "Ports"), _ports),
    Setting("endpoint_mode", ("EndpointSpec", "Mode"), _string),
    *_update_settings("update_config", ("UpdateConfig",)),
    *_update_settings("rollback_config", ("RollbackConfig",)),
]

# Options whose sub-options are settings of their own ("placement" -> "placement.constraints", ...).
GROUPED_OPTIONS = sorted({s.option.split(".")[0] for s in SETTINGS if "." in s.option})


# ------------------------------------------------------------ spec helpers


def get_path(spec: dict[str, Any], path: Path) -> Any:
    node: Any = spec
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def set_path(spec: dict[str, Any], path: Path, value: Any) -> None:
    node = spec
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[path[-1]] = value


def normalized(value: Any) -> Any:
    """The value with null and empty members dropped: the manager stores "not set" and "empty" alike."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            item = normalized(item)
            if item is None or item == {} or item == []:
                continue
            out[key] = item
        return out
    if isinstance(value, list):
        return [normalized(item) for item in value]
    return value


def same(left: Any, right: Any) -> bool:
    # Wrapped, so that an empty value compares equal to an unset one at the top level too.
    return normalized({"value": left}) == normalized({"value": right})


def given_settings(params: dict[str, Any]) -> list[tuple[Setting, Any]]:
    """The settings the user gave a value for, with the raw value (sub-options of a dict option included)."""
    out = []
    for setting in SETTINGS:
        option, sub = setting.option.partition(".")[::2]
        value = params.get(option)
        if sub:
            value = value.get(sub) if isinstance(value, dict) else None
        if value is not None:
            out.append((setting, value))
    return out


def mode_of(spec: dict[str, Any] | None) -> str | None:
    if not spec:
        return None
    mode = spec.get("Mode") or {}
    if "Global" in mode:
        return "global"
    if "Replicated" in mode or not mode:
        return "replicated"
    # Jobs: a kind this module does not manage; any requested mode then differs.
    return next(iter(mode)).lower()


class Plan(NamedTuple):
    spec: dict[str, Any]  # the desired spec
    changes: list[str]  # options whose value differs from the service's
    rebuild: bool  # the mode changes: the API cannot update that, the service is replaced


def plan_service(name: str, current: dict[str, Any] | None, params: dict[str, Any]) -> Plan:
    """The spec to send for ``params`` laid over ``current`` (the service's Spec, None to create)."""
    creating = current is None
    if creating and not params.get("image"):
        raise SpecError("image is required to create service %s" % name)
    spec: dict[str, Any] = (
        copy.deepcopy(current) if current is not None
        else {"Name": name, "TaskTemplate": {"ContainerSpec": {}}}
    )
    changes: list[str] = []
    for setting, raw in given_settings(params):
        try:
            value = setting.convert(raw)
        except SpecError:
            raise
        except (TypeError, ValueError, AttributeError, KeyError) as exc:
            raise SpecError("%s: %s" % (setting.option, exc)) from None
        if not same(get_path(spec, setting.path), value):
            changes.append(setting.option)
        set_path(spec, setting.path, value)

    rebuild = _plan_mode(spec, current, params, changes)

    if params.get("force_update") and not creating:
        task = spec["TaskTemplate"]
        task["ForceUpdate"] = int(task.get("ForceUpdate") or 0) + 1
        changes.append("force_update")
    return Plan(spec, changes, rebuild)


def _plan_mode(spec: dict[str, Any], current: dict[str, Any] | None, params: dict[str, Any], changes: list[str]) -> bool:
    current_mode = mode_of(current)
    wanted = params.get("mode") or current_mode or "replicated"
    replicas = params.get("replicas")
    if replicas is not None and replicas < 0:
        replicas = None  # community.docker's -1: keep the current count
    if wanted == "global" and replicas is not None:
        raise SpecError("replicas: only a replicated service has replicas (mode is global)")
    if wanted != current_mode:
        if current_mode is not None or params.get("mode"):
            changes.append("mode")
        if current_mode is None and replicas is not None:
            changes.append("replicas")
        if wanted == "global":
            spec["Mode"] = {"Global": {}}
        else:
            spec["Mode"] = {"Replicated": {"Replicas": 1 if replicas is None else replicas}}
        return current_mode is not None
    if replicas is not None:
        if get_path(spec, ("Mode", "Replicated", "Replicas")) != replicas:
            changes.append("replicas")
        set_path(spec, ("Mode", "Replicated", "Replicas"), replicas)
    return False
