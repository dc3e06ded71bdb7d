"""The Engine API's swarm types, as pydantic models.

Field names are the wire names (PascalCase, as in Docker's OpenAPI document),
so that a validation error names the field exactly as the client sent it.
These models are the one definition of each spec: the HTTP API validates with
them, the store persists them, the manager and worker act on them.

Unknown fields are ignored, as the Engine's Go decoder ignores them, so that
newer clients keep working.
"""



import datetime as _dt
import re
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .duration import SECOND, Duration, parse_duration


class Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, validate_assignment=False)

    @model_validator(mode="before")
    @classmethod
    def _as_go_decodes(cls, data: Any) -> Any:
        """Read JSON the way the Engine's Go decoder does.

        Go clients send nil maps and slices as null, which means "not given";
        and Go matches field names case-insensitively when there is no exact
        match (the Docker SDK for Python sends ``{"replicated": ...}``).
        """
        if not isinstance(data, dict):
            return data
        fields = cls.__pydantic_fields__
        if data.keys() <= fields.keys() and None not in data.values():
            return data  # as written by the store and most clients: decoding tasks was much of a manager's work
        folded = _folded_names(cls)
        out: dict[str, Any] = {}
        for key, value in data.items():
            if value is None:
                continue
            name = key if key in fields else folded.get(key.lower(), key) if isinstance(key, str) else key
            if name in out and name != key:
                continue  # an exact match wins over a case-folded one
            out[name] = value
        return out

    def wire(self) -> dict[str, Any]:
        """The JSON shape Docker clients expect: omit what is unset."""
        return self.model_dump(mode="json", exclude_none=True, by_alias=True)


_FOLDED: dict[type, dict[str, str]] = {}


def _folded_names(cls: type[BaseModel]) -> dict[str, str]:
    names = _FOLDED.get(cls)
    if names is None:
        names = _FOLDED[cls] = {name.lower(): name for name in cls.__pydantic_fields__}
    return names


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat().replace("+00:00", "Z")


class ObjectVersion(Wire):
    Index: int = 0


class Meta(Wire):
    ID: str = ""
    Version: ObjectVersion = Field(default_factory=ObjectVersion)
    CreatedAt: str = Field(default_factory=now)
    UpdatedAt: str = Field(default_factory=now)


# --------------------------------------------------------------- service spec

LabelMap = dict[str, str]


class PlatformInfo(Wire):
    Architecture: str = ""
    OS: str = ""


class MountBindOptions(Wire):
    Propagation: Literal["private", "rprivate", "shared", "rshared", "slave", "rslave"] | None = None
    NonRecursive: bool | None = None


class VolumeDriverConfig(Wire):
    Name: str = ""
    Options: dict[str, str] | None = None


class MountVolumeOptions(Wire):
    NoCopy: bool | None = None
    Labels: LabelMap | None = None
    DriverConfig: VolumeDriverConfig | None = None


class MountTmpfsOptions(Wire):
    SizeBytes: int | None = Field(default=None, ge=0)
    Mode: int | None = Field(default=None, ge=0)


class Mount(Wire):
    Target: str
    Source: str | None = None
    Type: Literal["bind", "volume", "tmpfs", "npipe"] = "volume"
    ReadOnly: bool | None = None
    Consistency: str | None = None
    BindOptions: MountBindOptions | None = None
    VolumeOptions: MountVolumeOptions | None = None
    TmpfsOptions: MountTmpfsOptions | None = None

    @model_validator(mode="after")
    def _source_for_bind(self) -> "Mount":
        if not self.Target.startswith("/"):
            raise ValueError(f"Target must be an absolute path, got {self.Target!r}")
        if self.Type == "bind" and not self.Source:
            raise ValueError("Source is required for a bind mount")
        if self.Type == "tmpfs" and self.Source:
            raise ValueError("Source must not be set for a tmpfs mount")
        return self


class HealthConfig(Wire):
    Test: list[str] | None = None
    Interval: Duration | None = None
    Timeout: Duration | None = None
    Retries: int | None = Field(default=None, ge=0)
    StartPeriod: Duration | None = None

    @field_validator("Test")
    @classmethod
    def _test_form(cls, value: list[str] | None) -> list[str] | None:
        if value and value[0] not in ("NONE", "CMD", "CMD-SHELL", ""):
            raise ValueError("first element must be NONE, CMD or CMD-SHELL")
        return value


class ContainerDNSConfig(Wire):
    Nameservers: list[str] | None = None
    Search: list[str] | None = None
    Options: list[str] | None = None


class SecretFile(Wire):
    """Where a secret or config appears in the container: a file name (relative to ``/run/secrets`` for a
    secret, to ``/`` for a config, or absolute), its owner and its permission bits."""

    Name: str = ""
    UID: str = "0"
    GID: str = "0"
    Mode: int = Field(default=0o444, ge=0, le=0o7777)

    @field_validator("UID", "GID")
    @classmethod
    def _numeric(cls, value: str) -> str:
        if not value.isdigit():
            raise ValueError(f"want a numeric ID, got {value!r}")
        return value

    @field_validator("Name")
    @classmethod
    def _no_escape(cls, value: str) -> str:
        if ".." in value.split("/"):
            raise ValueError(f"file name {value!r} must not contain '..'")
        return value


class SecretReference(Wire):
    File: SecretFile | None = None
    SecretID: str = ""
    SecretName: str = ""


class ConfigReference(Wire):
    File: SecretFile | None = None
    Runtime: dict[str, Any] | None = None
    ConfigID: str = ""
    ConfigName: str = ""


class Ulimit(Wire):
    Name: str
    Soft: int
    Hard: int


class ContainerPrivileges(Wire):
    CredentialSpec: dict[str, Any] | None = None
    SELinuxContext: dict[str, Any] | None = None


class ContainerTemplate(Wire):
    Image: str = Field(min_length=1)
    Labels: LabelMap | None = None
    Command: list[str] | None = None
    Args: list[str] | None = None
    Hostname: str | None = None
    Env: list[str] | None = None
    Dir: str | None = None
    User: str | None = None
    Groups: list[str] | None = None
    Privileges: ContainerPrivileges | None = None
    TTY: bool | None = None
    OpenStdin: bool | None = None
    ReadOnly: bool | None = None
    Mounts: list[Mount] | None = None
    StopSignal: str | None = None
    StopGracePeriod: Duration | None = None
    HealthCheck: HealthConfig | None = None
    Hosts: list[str] | None = None
    DNSConfig: ContainerDNSConfig | None = None
    Secrets: list[SecretReference] | None = None
    Configs: list[ConfigReference] | None = None
    Isolation: str | None = None
    Init: bool | None = None
    Sysctls: dict[str, str] | None = None
    CapabilityAdd: list[str] | None = None
    CapabilityDrop: list[str] | None = None
    Ulimits: list[Ulimit] | None = None

    @field_validator("Env")
    @classmethod
    def _env_form(cls, value: list[str] | None) -> list[str] | None:
        for item in value or []:
            if not item or item.startswith("="):
                raise ValueError(f"invalid environment variable {item!r}: want NAME=value")
        return value


class ResourceObject(Wire):
    NanoCPUs: int | None = Field(default=None, ge=0)
    MemoryBytes: int | None = Field(default=None, ge=0)
    Pids: int | None = Field(default=None, ge=0)
    GenericResources: list[dict[str, Any]] | None = None


class ResourceRequirements(Wire):
    Limits: ResourceObject | None = None
    Reservations: ResourceObject | None = None


class RestartPolicySpec(Wire):
    Condition: Literal["none", "on-failure", "any"] = "any"
    Delay: Duration = 5 * SECOND
    MaxAttempts: int = Field(default=0, ge=0)
    Window: Duration = 0


class SpreadOver(Wire):
    SpreadDescriptor: str = Field(min_length=1)


class PlacementPreference(Wire):
    Spread: SpreadOver


class PlacementSpec(Wire):
    Constraints: list[str] | None = None
    Preferences: list[PlacementPreference] | None = None
    MaxReplicas: int | None = Field(default=None, ge=0)
    Platforms: list[PlatformInfo] | None = None

    @field_validator("Constraints")
    @classmethod
    def _constraints_parse(cls, value: list[str] | None) -> list[str] | None:
        # Imported here: the constraint grammar lives with the scheduler that evaluates it.
        from ..manager.constraints import parse_constraint

        for expr in value or []:
            parse_constraint(expr)
        return value


class NetworkAttachmentConfig(Wire):
    Target: str = Field(min_length=1)
    Aliases: list[str] | None = None
    DriverOpts: dict[str, str] | None = None


class LogDriverSpec(Wire):
    Name: str = ""
    Options: dict[str, str] | None = None


class TaskSpec(Wire):
    ContainerSpec: ContainerTemplate
    Resources: ResourceRequirements | None = None
    RestartPolicy: RestartPolicySpec = Field(default_factory=RestartPolicySpec)
    Placement: PlacementSpec | None = None
    Networks: list[NetworkAttachmentConfig] | None = None
    LogDriver: LogDriverSpec | None = None
    ForceUpdate: int = Field(default=0, ge=0)
    Runtime: str | None = None


class ReplicatedMode(Wire):
    Replicas: int = Field(default=1, ge=0)


class GlobalMode(Wire):
    pass


class ReplicatedJobMode(Wire):
    MaxConcurrent: int = Field(default=1, ge=0)
    TotalCompletions: int | None = Field(default=None, ge=0)


class ServiceMode(Wire):
    Replicated: ReplicatedMode | None = None
    Global: GlobalMode | None = None
    ReplicatedJob: ReplicatedJobMode | None = None
    GlobalJob: GlobalMode | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> "ServiceMode":
        chosen = [n for n in ("Replicated", "Global", "ReplicatedJob", "GlobalJob") if getattr(self, n) is not None]
        if not chosen:
            self.Replicated = ReplicatedMode()
        elif len(chosen) > 1:
            raise ValueError(f"only one mode may be set, got {', '.join(chosen)}")
        return self

    @property
    def kind(self) -> str:
        for name in ("Replicated", "Global", "ReplicatedJob", "GlobalJob"):
            if getattr(self, name) is not None:
                return name
        return "Replicated"

    @property
    def is_global(self) -> bool:
        return self.Global is not None or self.GlobalJob is not None

    @property
    def is_job(self) -> bool:
        return self.ReplicatedJob is not None or self.GlobalJob is not None


class UpdateConfigSpec(Wire):
    Parallelism: int = Field(default=1, ge=0)
    Delay: Duration = 0
    FailureAction: Literal["continue", "pause", "rollback"] = "pause"
    Monitor: Duration = 5 * SECOND
    MaxFailureRatio: float = Field(default=0, ge=0, le=1)
    Order: Literal["stop-first", "start-first"] = "stop-first"


class PortConfig(Wire):
    Name: str | None = None
    Protocol: Literal["tcp", "udp", "sctp"] = "tcp"
    TargetPort: int = Field(ge=1, le=65535)
    PublishedPort: int | None = Field(default=None, ge=0, le=65535)
    PublishMode: Literal["ingress", "host"] = "ingress"


class EndpointSettings(Wire):
    Mode: Literal["vip", "dnsrr"] = "vip"
    Ports: list[PortConfig] | None = None

    @model_validator(mode="after")
    def _ports_unique(self) -> "EndpointSettings":
        seen: set[tuple[int, str]] = set()
        for port in self.Ports or []:
            if port.PublishedPort:
                key = (port.PublishedPort, port.Protocol)
                if key in seen:
                    raise ValueError(f"published port {port.PublishedPort}/{port.Protocol} is given twice")
                seen.add(key)
        if self.Mode == "dnsrr" and any(p.PublishMode == "ingress" for p in self.Ports or []):
            raise ValueError("port published with ingress mode can't be used with dnsrr mode")
        return self


class ServiceSpec(Wire):
    Name: str = Field(default="", pattern=r"^([a-zA-Z0-9][a-zA-Z0-9_.-]{0,62})?$")
    Labels: LabelMap | None = None
    TaskTemplate: TaskSpec
    Mode: ServiceMode = Field(default_factory=ServiceMode)
    UpdateConfig: UpdateConfigSpec = Field(default_factory=UpdateConfigSpec)
    RollbackConfig: UpdateConfigSpec = Field(default_factory=UpdateConfigSpec)
    Networks: list[NetworkAttachmentConfig] | None = None
    EndpointSpec: EndpointSettings = Field(default_factory=EndpointSettings)

    @model_validator(mode="after")
    def _job_settings(self) -> "ServiceSpec":
        if self.Mode.is_job and self.TaskTemplate.RestartPolicy.Condition == "any":
            # Swarm refuses jobs that would restart after success.
            self.TaskTemplate.RestartPolicy.Condition = "on-failure"
        job = self.Mode.ReplicatedJob
        if job is not None and job.TotalCompletions is None:
            # As documented for the API; the CLI prints it and cannot do without.
            job.TotalCompletions = job.MaxConcurrent
        return self


class EndpointVirtualIP(Wire):
    NetworkID: str = ""
    Addr: str = ""


class ServiceEndpoint(Wire):
    Spec: EndpointSettings = Field(default_factory=EndpointSettings)
    Ports: list[PortConfig] | None = None
    VirtualIPs: list[EndpointVirtualIP] | None = None


class ServiceUpdateStatus(Wire):
    State: Literal[
        "updating", "paused", "completed", "rollback_started", "rollback_paused", "rollback_completed"
    ] | None = None
    StartedAt: str | None = None
    CompletedAt: str | None = None
    Message: str | None = None


class ServiceJobStatus(Wire):
    # Bumped by every update of a job service: its tasks run again, each carrying the iteration.
    JobIteration: ObjectVersion = Field(default_factory=ObjectVersion)
    LastExecution: str = Field(default_factory=now)


class ServiceTaskCounts(Wire):
    RunningTasks: int = 0
    DesiredTasks: int = 0
    CompletedTasks: int = 0


class Service(Meta):
    Spec: ServiceSpec
    PreviousSpec: ServiceSpec | None = None
    Endpoint: ServiceEndpoint = Field(default_factory=ServiceEndpoint)
    UpdateStatus: ServiceUpdateStatus | None = None
    ServiceStatus: ServiceTaskCounts | None = None
    JobStatus: ServiceJobStatus | None = None


# ------------------------------------------------------------ secrets, configs

# Swarm's rule for secret and config names, and its limit on their values.
SECRET_NAME = r"^[a-zA-Z0-9](?:[a-zA-Z0-9_.-]{0,62}[a-zA-Z0-9])?$"
MAX_SECRET_BYTES = 500 * 1024


class DriverSpec(Wire):
    Name: str = ""
    Options: dict[str, str] | None = None


class ConfigSpec(Wire):
    """The body of ``POST /configs/create``; stored without ``Data`` (the value is kept sealed beside it)."""

    Name: str
    Labels: LabelMap | None = None
    Data: str | None = None  # base64, as on the wire
    Templating: DriverSpec | None = None

    @field_validator("Name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not re.match(SECRET_NAME, value):
            raise ValueError(f"invalid name {value!r}: only 64 [a-zA-Z0-9-_.] characters allowed, "
                             "and the start and end character must be [a-zA-Z0-9]")
        return value

    @field_validator("Data", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        # A type error would quote the input, and the input is the value.
        if value is not None and not isinstance(value, str):
            raise ValueError("must be a base64 string")
        return value


class SecretSpec(ConfigSpec):
    Driver: DriverSpec | None = None


class Secret(Meta):
    Spec: SecretSpec
    # The value sealed with the swarm's data key (see manager/keys.py); never leaves the managers.
    Sealed: str = ""


class Config(Meta):
    Spec: ConfigSpec
    Sealed: str = ""


# -------------------------------------------------------------------- networks


class IPAMPool(Wire):
    Subnet: str | None = None
    IPRange: str | None = None
    Gateway: str | None = None
    AuxiliaryAddresses: dict[str, str] | None = None


class IPAMSettings(Wire):
    Driver: str = "default"
    Config: list[IPAMPool] | None = None
    Options: dict[str, str] | None = None


class NetworkSpec(Wire):
    """The body of ``POST /networks/create``; kept as the stored network's spec."""

    Name: str = Field(min_length=1, max_length=63, pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
    CheckDuplicate: bool | None = None
    Driver: str = "bridge"
    Scope: str | None = None
    Internal: bool = False
    Attachable: bool = False
    Ingress: bool = False
    IPAM: IPAMSettings | None = None
    EnableIPv6: bool = False
    Options: dict[str, str] | None = None
    Labels: LabelMap | None = None
    ConfigOnly: bool = False
    ConfigFrom: dict[str, str] | None = None


class Network(Meta):
    """A swarm-scoped overlay network with what the managers allocated for it."""

    Spec: NetworkSpec
    VNI: int
    Subnet: str
    Gateway: str


class NetworkAttachment(Wire):
    """A task's (or a service's) place on one network: Swarm's ``NetworksAttachments`` entry."""

    Network: dict[str, Any]
    Addresses: list[str]
    Aliases: list[str] | None = None


# ----------------------------------------------------------------------- tasks


class TaskState(str, Enum):
    """Ordered: observed state only moves forward through this list."""

    NEW = "new"
    PENDING = "pending"
    ASSIGNED = "assigned"
    ACCEPTED = "accepted"
    PREPARING = "preparing"
    READY = "ready"
    STARTING = "starting"
    RUNNING = "running"
    COMPLETE = "complete"
    SHUTDOWN = "shutdown"
    FAILED = "failed"
    REJECTED = "rejected"
    REMOVE = "remove"
    ORPHANED = "orphaned"

    @property
    def rank(self) -> int:
        return self._rank  # type: ignore[attr-defined, no-any-return]

    @property
    def terminal(self) -> bool:
        return self._terminal  # type: ignore[attr-defined, no-any-return]


# Set once on each member rather than looked up at each call: the orchestrator, the scheduler and every
# `docker service ls` ask them of every task, and a list search per question was a tenth of a busy leader's work.
for _rank, _state in enumerate(TaskState):
    _state._rank = _rank  # type: ignore[attr-defined]
for _state in TaskState:
    _state._terminal = _state._rank > TaskState.RUNNING._rank  # type: ignore[attr-defined]


class TaskContainerStatus(Wire):
    ContainerID: str | None = None
    PID: int | None = None
    ExitCode: int | None = None


class TaskStatus(Wire):
    Timestamp: str = Field(default_factory=now)
    State: TaskState = TaskState.NEW
    Message: str = ""
    Err: str | None = None
    ContainerStatus: TaskContainerStatus | None = None
    PortStatus: dict[str, Any] | None = None


class Task(Meta):
    # "SERVICE.SLOT" for replicated tasks, "SERVICE.NODEID" for global ones;
    # the container is named "NAME.TASKID" as Swarm names it.
    Name: str = ""
    Labels: LabelMap = Field(default_factory=dict)
    Spec: TaskSpec
    ServiceID: str
    Slot: int | None = None
    NodeID: str | None = None
    Status: TaskStatus = Field(default_factory=TaskStatus)
    DesiredState: TaskState = TaskState.RUNNING
    JobIteration: ObjectVersion | None = None
    NetworksAttachments: list[NetworkAttachment] | None = None
    GenericResources: list[dict[str, Any]] | None = None


# ------------------------------------------------------------------------ logs
# SwarmKit's log broker messages (its protobuf names): what ``docker service logs`` asks for, as managers
# hand it to workers, and the lines workers send back.


class LogSelector(Wire):
    ServiceIDs: list[str] = Field(default_factory=list)
    TaskIDs: list[str] = Field(default_factory=list)


class LogSubscriptionOptions(Wire):
    Streams: list[Literal["stdout", "stderr"]] = Field(default_factory=lambda: ["stdout", "stderr"], min_length=1)
    Follow: bool = False
    Tail: int | None = Field(default=None, ge=0)  # lines from the end of each task's log; None: all
    Since: float | None = None  # UNIX time in seconds


class SubscriptionMessage(Wire):
    ID: str
    Selector: LogSelector
    Options: LogSubscriptionOptions
    # The manager that serves the client: workers send the lines there.
    Manager: str
    # Without Follow, the nodes expected to answer (each says Close when it has sent everything).
    Nodes: list[str] = Field(default_factory=list)

    def selects(self, task: "Task") -> bool:
        return task.ID in self.Selector.TaskIDs or task.ServiceID in self.Selector.ServiceIDs

    def concerns(self, node_id: str, tasks: list["Task"]) -> bool:
        """Whether ``node_id``, holding ``tasks``, has to publish for this subscription."""
        if not self.Options.Follow:
            return node_id in self.Nodes
        # Followed: any node that runs (or ran) a selected task, including tasks placed after the call began.
        return any(self.selects(t) for t in tasks)


class LogContext(Wire):
    NodeID: str = ""
    ServiceID: str = ""
    TaskID: str


class LogMessage(Wire):
    # Raw output may be any bytes: base64 in JSON.
    model_config = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")

    Context: LogContext
    Timestamp: str  # as the engine wrote it: RFC 3339 with nanoseconds
    Stream: Literal["stdout", "stderr"]
    Data: bytes


class PublishLogsMessage(Wire):
    SubscriptionID: str
    Messages: list[LogMessage] = Field(default_factory=list)
    Close: bool = False  # this node has sent everything it has for the subscription


# ----------------------------------------------------------------------- nodes


class NodeSpec(Wire):
    Name: str | None = None
    Labels: LabelMap = Field(default_factory=dict)
    Role: Literal["worker", "manager"] = "worker"
    Availability: Literal["active", "pause", "drain"] = "active"


class EngineDescription(Wire):
    EngineVersion: str = ""
    Labels: LabelMap = Field(default_factory=dict)
    Plugins: list[dict[str, str]] = Field(default_factory=list)


class TLSInfoSpec(Wire):
    TrustRoot: str = ""
    CertIssuerSubject: str = ""
    CertIssuerPublicKey: str = ""


class NodeDescription(Wire):
    Hostname: str = ""
    Platform: PlatformInfo = Field(default_factory=PlatformInfo)
    Resources: ResourceObject = Field(default_factory=ResourceObject)
    Engine: EngineDescription = Field(default_factory=EngineDescription)
    TLSInfo: TLSInfoSpec | None = None


class NodeStatus(Wire):
    State: Literal["unknown", "down", "ready", "disconnected"] = "unknown"
    Message: str = ""
    Addr: str = ""


class NodeManagerStatus(Wire):
    Leader: bool = False
    Reachability: Literal["unknown", "unreachable", "reachable"] = "unknown"
    Addr: str = ""


class Node(Meta):
    Spec: NodeSpec = Field(default_factory=NodeSpec)
    Description: NodeDescription = Field(default_factory=NodeDescription)
    Status: NodeStatus = Field(default_factory=NodeStatus)
    ManagerStatus: NodeManagerStatus | None = None


# ----------------------------------------------------------------------- swarm


class OrchestrationConfig(Wire):
    TaskHistoryRetentionLimit: int = Field(default=5, ge=0)


class RaftConfig(Wire):
    SnapshotInterval: int = 10000
    KeepOldSnapshots: int = 0
    LogEntriesForSlowFollowers: int = 500
    ElectionTick: int = 10
    HeartbeatTick: int = 1


class DispatcherConfig(Wire):
    HeartbeatPeriod: Duration = 5 * SECOND

    @field_validator("HeartbeatPeriod")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value < 100_000_000:
            raise ValueError("heartbeat period must be at least 100ms")
        return value


class ExternalCA(Wire):
    Protocol: str = "cfssl"
    URL: str = ""
    Options: dict[str, str] | None = None
    CACert: str | None = None


class CAConfigSpec(Wire):
    NodeCertExpiry: Duration = 90 * 24 * 3600 * SECOND
    ExternalCAs: list[ExternalCA] | None = None
    SigningCACert: str | None = None
    SigningCAKey: str | None = None
    ForceRotate: int = 0

    @field_validator("NodeCertExpiry")
    @classmethod
    def _minimum(cls, value: int) -> int:
        if value < 3600 * SECOND:
            raise ValueError("node certificate expiry must be at least 1h")
        return value


class EncryptionConfigSpec(Wire):
    AutoLockManagers: bool = False


class TaskDefaultsSpec(Wire):
    LogDriver: LogDriverSpec | None = None


# Settings of this swarm that Docker's spec has no field for ride in its labels, which every client
# (the CLI's "swarm update" included) sends back untouched.
GOSSIP_KEY_ROTATION_LABEL = "swarm.gossip.key-rotation"
DEFAULT_GOSSIP_KEY_ROTATION = 12 * 3600 * SECOND
MIN_GOSSIP_KEY_ROTATION = 60 * SECOND


class SwarmSpec(Wire):
    Name: str = "default"
    Labels: LabelMap = Field(default_factory=dict)
    Orchestration: OrchestrationConfig = Field(default_factory=OrchestrationConfig)
    Raft: RaftConfig = Field(default_factory=RaftConfig)
    Dispatcher: DispatcherConfig = Field(default_factory=DispatcherConfig)
    CAConfig: CAConfigSpec = Field(default_factory=CAConfigSpec)
    EncryptionConfig: EncryptionConfigSpec = Field(default_factory=EncryptionConfigSpec)
    TaskDefaults: TaskDefaultsSpec = Field(default_factory=TaskDefaultsSpec)

    @field_validator("Labels")
    @classmethod
    def _settings(cls, labels: dict[str, str]) -> dict[str, str]:
        if GOSSIP_KEY_ROTATION_LABEL in labels:
            _gossip_key_rotation(labels[GOSSIP_KEY_ROTATION_LABEL])
        return labels

    @property
    def gossip_key_rotation(self) -> int:
        """How long a gossip key stays the newest, in nanoseconds."""
        value = self.Labels.get(GOSSIP_KEY_ROTATION_LABEL)
        return DEFAULT_GOSSIP_KEY_ROTATION if value is None else _gossip_key_rotation(value)


def _gossip_key_rotation(value: str) -> int:
    try:
        ns = parse_duration(value)
    except ValueError as exc:
        raise ValueError(f"{GOSSIP_KEY_ROTATION_LABEL}: {exc}") from None
    if not isinstance(ns, int) or ns < MIN_GOSSIP_KEY_ROTATION:
        raise ValueError(f"{GOSSIP_KEY_ROTATION_LABEL}: the gossip key rotation period must be at least 1m, "
                         f"got {value!r}")
    return ns


class JoinTokenPair(Wire):
    Worker: str = ""
    Manager: str = ""


class Swarm(Meta):
    Spec: SwarmSpec = Field(default_factory=SwarmSpec)
    TLSInfo: TLSInfoSpec = Field(default_factory=TLSInfoSpec)
    RootRotationInProgress: bool = False
    DataPathPort: int = 4789
    DefaultAddrPool: list[str] = Field(default_factory=lambda: ["10.0.0.0/8"])
    SubnetSize: int = 24
    JoinTokens: JoinTokenPair = Field(default_factory=JoinTokenPair)


# ------------------------------------------------------------ request bodies


class InitRequest(Wire):
    ListenAddr: str = "0.0.0.0:2377"
    AdvertiseAddr: str = ""
    DataPathAddr: str = ""
    DataPathPort: int = 0
    DefaultAddrPool: list[str] | None = None
    ForceNewCluster: bool = False
    SubnetSize: int = 0
    Spec: SwarmSpec = Field(default_factory=SwarmSpec)
    AutoLockManagers: bool = False
    Availability: Literal["active", "pause", "drain", ""] = ""


class JoinRequest(Wire):
    ListenAddr: str = "0.0.0.0:2377"
    AdvertiseAddr: str = ""
    DataPathAddr: str = ""
    RemoteAddrs: list[str] = Field(min_length=1)
    JoinToken: str = Field(min_length=1)
    Availability: Literal["active", "pause", "drain", ""] = ""


class UnlockRequest(Wire):
    UnlockKey: str = Field(min_length=1)
