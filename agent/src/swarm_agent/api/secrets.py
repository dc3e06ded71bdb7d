"""``/secrets`` and ``/configs``: create, list, inspect, update (labels only) and remove; services' references.

A value is sealed with the swarm's data key before it is stored (see ``manager/keys.py``) and is never
returned for a secret, nor written to any log or error message; a config's value is returned by inspect, as
Docker does. Services refer to them by ID and name (``ContainerSpec.Secrets``/``Configs``): only the
references are stored with the service and its tasks, and the dispatcher hands the values to the nodes
running those tasks.
"""

import base64
import binascii
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..pki import new_node_id
from ..store.state import Conflict as StoreConflict
from ..store.state import NameConflict
from ..worker.secret_files import target_path
from .app import VERSION, Route, agent_of, filter_query, json_response, query_str, query_version, read_body
from .errors import BadRequest, Conflict
from .filters import match_label, parse_filters
from .lookup import resolve
from .models import MAX_SECRET_BYTES, Config, ContainerTemplate, ConfigSpec, Secret, SecretFile, SecretSpec, ServiceSpec, now

if TYPE_CHECKING:
    from ..manager.manager import Manager
    from ..store.state import Snapshot


@dataclass(frozen=True)
class Kind:
    name: str  # "secret" or "config"
    model: type[Secret] | type[Config]
    spec: type[SecretSpec] | type[ConfigSpec]
    shows_data: bool  # inspect returns the value (configs) or not (secrets)

    def table(self, state: "Snapshot") -> dict[str, Any]:
        return state.secrets if self.name == "secret" else state.configs


FILTERS = {"id", "name", "names", "label"}
SECRET = Kind("secret", Secret, SecretSpec, shows_data=False)
CONFIG = Kind("config", Config, ConfigSpec, shows_data=True)


def _kind(request: web.Request) -> Kind:
    return CONFIG if "/configs" in request.path else SECRET


def find(kind: Kind, state: "Snapshot", ref: str) -> Any:
    return resolve(kind.name, ref, kind.table(state).values(), lambda o: o.ID, lambda o: [o.Spec.Name])


def _public(kind: Kind, mgr: "Manager", obj: Any) -> dict[str, Any]:
    out = obj.wire()
    out.pop("Sealed", None)
    out["Spec"].setdefault("Labels", {})
    if kind.shows_data:
        out["Spec"]["Data"] = base64.b64encode(mgr.open_value(kind.name, obj.ID, obj.Sealed)).decode()
    return out


def _value(kind: Kind, spec: Any) -> bytes:
    """The spec's value, checked as Swarm checks it; the message never quotes the value."""
    if spec.Data is None:
        raise BadRequest(f"Data: a {kind.name} needs a value")
    try:
        data = base64.b64decode(spec.Data, validate=True)
    except binascii.Error:
        raise BadRequest("Data: not valid base64") from None
    if not 0 < len(data) <= MAX_SECRET_BYTES:
        raise BadRequest(f"Data: {kind.name} data must be larger than 0 and less than {MAX_SECRET_BYTES // 1024} KB "
                         f"(got {len(data)} bytes)")
    return data


def _check_drivers(kind: Kind, spec: Any) -> None:
    driver = getattr(spec, "Driver", None)
    if driver is not None and driver.Name:
        raise BadRequest(f"Driver: external {kind.name} drivers are not supported on this cluster (got {driver.Name!r})")
    if spec.Templating is not None and spec.Templating.Name:
        raise BadRequest(f"Templating: {kind.name} templates are not supported on this cluster "
                         f"(got {spec.Templating.Name!r})")


def users_of(kind: Kind, obj_id: str, state: "Snapshot") -> list[str]:
    """Names of the services whose spec refers to the secret or config ``obj_id``."""
    return sorted(svc.Spec.Name for svc in state.services.values() if obj_id in referenced(svc.Spec.TaskTemplate.ContainerSpec)[kind.name])


def referenced(container: ContainerTemplate) -> dict[str, set[str]]:
    """The IDs of the secrets and configs a container spec refers to, by kind."""
    return {"secret": {r.SecretID for r in container.Secrets or []},
            "config": {r.ConfigID for r in container.Configs or []}}


def resolve_references(spec: ServiceSpec, state: "Snapshot") -> None:
    """Resolve the spec's secret and config references to stored objects (by ID, else by exact name), fill
    in both and a default file, and refuse unknown ones and two files at the same target."""
    container = spec.TaskTemplate.ContainerSpec
    targets: dict[str, str] = {}
    for kind, refs, id_field, name_field, field in (
        (SECRET, container.Secrets, "SecretID", "SecretName", "Secrets"),
        (CONFIG, container.Configs, "ConfigID", "ConfigName", "Configs"),
    ):
        table = kind.table(state)
        for i, ref in enumerate(refs or []):
            where = f"TaskTemplate.ContainerSpec.{field}.{i}"
            ref_id, ref_name = getattr(ref, id_field), getattr(ref, name_field)
            obj = table.get(ref_id) if ref_id else next((o for o in table.values() if o.Spec.Name == ref_name), None)
            if obj is None:
                raise BadRequest(f"{where}: {kind.name} {ref_id or ref_name or '(no ID or name)'} not found")
            if getattr(ref, "Runtime", None):
                raise BadRequest(f"{where}.Runtime: runtime configs (credential specs) are not supported on Linux")
            setattr(ref, id_field, obj.ID)
            setattr(ref, name_field, obj.Spec.Name)
            if ref.File is None:
                ref.File = SecretFile(Name=obj.Spec.Name)
            elif not ref.File.Name:
                ref.File.Name = obj.Spec.Name
            target = target_path(kind.name, ref.File, obj.Spec.Name)
            if target in targets:
                raise BadRequest(f"{where}: {kind.name} references '{targets[target]}' and '{obj.Spec.Name}' "
                                 f"have a conflicting target: '{target}'")
            targets[target] = obj.Spec.Name


async def list_objects(request: web.Request) -> web.Response:
    mgr = agent_of(request).require_manager()
    kind = _kind(request)
    filters = parse_filters(query_str(request, "filters"), FILTERS)
    await mgr.cache.barrier()
    out = []
    for obj in kind.table(mgr.cache.state).values():
        name = obj.Spec.Name
        if "id" in filters and not any(obj.ID.startswith(v) for v in filters["id"]):
            continue
        if "name" in filters and not any(name.startswith(v) for v in filters["name"]):
            continue
        if "names" in filters and name not in filters["names"]:
            continue
        if "label" in filters and not match_label(obj.Spec.Labels or {}, filters["label"]):
            continue
        out.append(_public(kind, mgr, obj))
    out.sort(key=lambda o: o["Spec"]["Name"])
    return json_response(out)


async def inspect_object(request: web.Request) -> web.Response:
    mgr = agent_of(request).require_manager()
    kind = _kind(request)
    await mgr.cache.barrier()
    return json_response(_public(kind, mgr, find(kind, mgr.cache.state, request.match_info["id"])))


async def create_object(request: web.Request) -> web.Response:
    mgr = agent_of(request).require_manager()
    kind = _kind(request)
    spec = await read_body(request, f"{kind.name} spec")
    _check_drivers(kind, spec)
    data = _value(kind, spec)
    obj_id = new_node_id()
    spec.Data = None
    obj = kind.model(ID=obj_id, Spec=spec, Sealed=mgr.seal_value(kind.name, obj_id, data))
    try:
        await mgr.store.create(obj)
    except NameConflict:
        raise Conflict(f"{kind.name} {spec.Name} already exists") from None
    mgr.log_event(f"{kind.name} created", **{kind.name: obj_id}, name=spec.Name, size=len(data))
    return json_response({"ID": obj_id}, status=201)


async def update_object(request: web.Request) -> web.Response:
    """Only labels change, as in Swarm: a value is immutable, a new one is a new secret or config."""
    mgr = agent_of(request).require_manager()
    kind = _kind(request)
    version = query_version(request)
    spec = await read_body(request, f"{kind.name} spec")
    await mgr.cache.barrier()
    current = find(kind, mgr.cache.state, request.match_info["id"])
    if spec.Name != current.Spec.Name:
        raise BadRequest(f"Name: only updates to Labels are allowed (cannot rename {kind.name} {current.Spec.Name})")
    if spec.Data is not None and _value(kind, spec) != mgr.open_value(kind.name, current.ID, current.Sealed):
        raise BadRequest(f"Data: only updates to Labels are allowed (the value of {kind.name} "
                         f"{current.Spec.Name} cannot change)")
    _check_drivers(kind, spec)
    updated = current.model_copy(deep=True)
    updated.Version.Index = version
    updated.Spec.Labels = spec.Labels
    updated.UpdatedAt = now()
    try:
        await mgr.store.update(updated)
    except StoreConflict:
        raise Conflict(f"update out of sequence: {kind.name} {current.Spec.Name} is at version "
                       f"{current.Version.Index}, the update was based on version {version}") from None
    mgr.log_event(f"{kind.name} updated", **{kind.name: current.ID}, name=current.Spec.Name)
    return web.Response(status=200)


async def remove_object(request: web.Request) -> web.Response:
    mgr = agent_of(request).require_manager()
    kind = _kind(request)
    await mgr.cache.barrier()
    obj = find(kind, mgr.cache.state, request.match_info["id"])
    users = users_of(kind, obj.ID, mgr.cache.state)
    if users:
        plural = "s" if len(users) > 1 else ""
        raise Conflict(f"{kind.name} '{obj.Spec.Name}' is in use by the following service{plural}: {', '.join(users)}")
    try:
        await mgr.store.delete(obj, check_version=False)
    except StoreConflict:
        raise Conflict(f"{kind.name} {obj.Spec.Name} changed while being removed; try again") from None
    mgr.log_event(f"{kind.name} removed", **{kind.name: obj.ID}, name=obj.Spec.Name)
    return web.Response(status=204)


ROUTES = [
    route
    for plural, kind in (("secrets", SECRET), ("configs", CONFIG))
    for route in (
        Route("GET", f"/{plural}", list_objects, "manager", query=(filter_query(FILTERS),)),
        Route("POST", f"/{plural}/create", create_object, "manager", body=kind.spec),
        Route("GET", f"/{plural}/{{id}}", inspect_object, "manager"),
        Route("POST", f"/{plural}/{{id}}/update", update_object, "manager", body=kind.spec, query=(VERSION,)),
        Route("DELETE", f"/{plural}/{{id}}", remove_object, "manager"),
    )
]
