"""Secrets and configs without a cluster: sealing, the key file and autolock, spec validation, references."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest
from pydantic import ValidationError

from swarm_agent.api.errors import ApiError, BadRequest, describe_validation
from swarm_agent.api.models import (
    Config,
    ConfigSpec,
    Mount,
    Secret,
    SecretFile,
    SecretSpec,
    Service,
    ServiceSpec,
    Task,
)
from swarm_agent.api.secrets import referenced, resolve_references, users_of, SECRET
from swarm_agent.manager.keys import (
    InvalidKey,
    KeyFile,
    format_unlock_key,
    new_key,
    parse_unlock_key,
    seal,
    unseal,
    value_aad,
)
from swarm_agent.manager.manager import Manager
from swarm_agent.store.etcd import EtcdClient
from swarm_agent.store.state import Snapshot, claims_of
from swarm_agent.worker.container_config import container_config
from swarm_agent.worker.secret_files import references, target_path

PLAIN = b"correct horse battery staple"


# ------------------------------------------------------------------ sealing


def test_sealed_values_open_only_with_their_key_and_object() -> None:
    key = new_key()
    sealed = seal(key, PLAIN, value_aad("secret", "s1"))
    assert PLAIN not in base64.b64decode(sealed) and PLAIN.decode() not in sealed
    assert unseal(key, sealed, value_aad("secret", "s1")) == PLAIN
    with pytest.raises(InvalidKey):
        unseal(new_key(), sealed, value_aad("secret", "s1"))
    # Copied onto another object (or from a config to a secret), the value does not open.
    with pytest.raises(InvalidKey):
        unseal(key, sealed, value_aad("secret", "s2"))
    with pytest.raises(InvalidKey):
        unseal(key, sealed, value_aad("config", "s1"))


def test_each_seal_uses_a_fresh_nonce() -> None:
    key = new_key()
    assert seal(key, PLAIN, b"a") != seal(key, PLAIN, b"a")


def test_tampered_values_are_refused() -> None:
    key = new_key()
    raw = bytearray(base64.b64decode(seal(key, PLAIN, b"a")))
    raw[-1] ^= 1
    with pytest.raises(InvalidKey):
        unseal(key, base64.b64encode(bytes(raw)).decode(), b"a")
    with pytest.raises(InvalidKey):
        unseal(key, "not base64!", b"a")


def test_unlock_keys_round_trip_and_bad_ones_are_named() -> None:
    key = new_key()
    text = format_unlock_key(key)
    assert text.startswith("SWMKEY-1-") and "=" not in text
    assert parse_unlock_key(f"  {text}\n") == key
    with pytest.raises(InvalidKey, match="starts with SWMKEY-1-"):
        parse_unlock_key("SWMTKN-1-abc")
    with pytest.raises(InvalidKey, match="32 bytes"):
        parse_unlock_key("SWMKEY-1-" + base64.b64encode(b"short").decode())
    with pytest.raises(InvalidKey, match="base64"):
        parse_unlock_key("SWMKEY-1-***")


def test_key_file_in_the_clear_and_sealed(tmp_path: Path) -> None:
    data_key, unlock = new_key(), new_key()
    file = KeyFile.of(tmp_path)
    file.save(data_key, None)
    assert stat.S_IMODE(file.path.stat().st_mode) == 0o600
    assert not file.locked() and file.load() == data_key

    file.save(data_key, unlock)
    assert file.locked()
    assert base64.b64encode(data_key).decode() not in file.path.read_text()
    with pytest.raises(InvalidKey):
        file.load()
    with pytest.raises(InvalidKey):
        file.load(new_key())
    assert file.load(unlock) == data_key
    file.remove()
    assert not file.exists()


# ------------------------------------------------------------------- models


@pytest.mark.parametrize("name", ["db_password", "a", "x.y-z_1", "a" * 64])
def test_good_names(name: str) -> None:
    assert SecretSpec(Name=name).Name == name


@pytest.mark.parametrize("name", ["", "-lead", "trail.", "has space", "a/b", "a" * 65])
def test_bad_names_are_refused_naming_the_field(name: str) -> None:
    with pytest.raises(ValidationError) as info:
        SecretSpec.model_validate({"Name": name})
    assert info.value.errors()[0]["loc"] == ("Name",)


def test_a_value_of_the_wrong_type_is_not_quoted() -> None:
    with pytest.raises(ValidationError) as info:
        SecretSpec.model_validate({"Name": "pw", "Data": 123456789})
    assert describe_validation(info.value) == "Data: must be a base64 string"


def test_file_references_are_checked() -> None:
    ok = ServiceSpec.model_validate(_service([{"SecretName": "s", "File": {"Name": "t", "UID": "10", "Mode": 0o400}}]))
    assert ok.TaskTemplate.ContainerSpec.Secrets[0].File.Mode == 0o400
    for bad in ({"Name": "../etc/passwd"}, {"Name": "t", "UID": "root"}, {"Name": "t", "Mode": 0o70000}):
        with pytest.raises(ValidationError):
            ServiceSpec.model_validate(_service([{"SecretName": "s", "File": bad}]))


def test_stored_secret_keeps_no_data_and_claims_its_name() -> None:
    secret = Secret(ID="s1", Spec=SecretSpec(Name="pw"), Sealed="xx")
    assert "Data" not in json.loads(secret.model_dump_json(exclude_none=True))["Spec"]
    assert claims_of(secret) == {"/swarm/names/secrets/pw": "s1"}
    assert claims_of(Config(ID="c1", Spec=ConfigSpec(Name="pw"))) == {"/swarm/names/configs/pw": "c1"}


# --------------------------------------------------------------- references


def _service(secrets: list[dict] | None = None, configs: list[dict] | None = None) -> dict:
    container = {"Image": "busybox", "Secrets": secrets, "Configs": configs}
    return {"Name": "web", "TaskTemplate": {"ContainerSpec": container}}


def _state() -> Snapshot:
    state = Snapshot()
    state.secrets = {"S1": Secret(ID="S1", Spec=SecretSpec(Name="pw")), "S2": Secret(ID="S2", Spec=SecretSpec(Name="pw2"))}
    state.configs = {"C1": Config(ID="C1", Spec=ConfigSpec(Name="site.conf"))}
    return state


def test_references_resolve_by_name_or_id_with_default_files() -> None:
    spec = ServiceSpec.model_validate(_service([{"SecretName": "pw"}, {"SecretID": "S2", "File": {"Name": "/etc/x"}}],
                                               [{"ConfigName": "site.conf"}]))
    resolve_references(spec, _state())
    secrets = spec.TaskTemplate.ContainerSpec.Secrets
    assert (secrets[0].SecretID, secrets[0].SecretName, secrets[0].File.Name) == ("S1", "pw", "pw")
    assert (secrets[1].SecretID, secrets[1].SecretName) == ("S2", "pw2")
    config = spec.TaskTemplate.ContainerSpec.Configs[0]
    assert (config.ConfigID, config.File.Name, config.File.Mode) == ("C1", "site.conf", 0o444)
    assert referenced(spec.TaskTemplate.ContainerSpec) == {"secret": {"S1", "S2"}, "config": {"C1"}}


def test_unknown_references_and_clashing_targets_are_refused() -> None:
    spec = ServiceSpec.model_validate(_service([{"SecretName": "nope"}]))
    with pytest.raises(BadRequest, match=r"TaskTemplate.ContainerSpec.Secrets.0: secret nope not found"):
        resolve_references(spec, _state())
    spec = ServiceSpec.model_validate(_service([{"SecretName": "pw", "File": {"Name": "same"}},
                                                {"SecretName": "pw2", "File": {"Name": "same"}}]))
    with pytest.raises(BadRequest, match="Secrets.1: secret references 'pw' and 'pw2' have a conflicting target"):
        resolve_references(spec, _state())
    spec = ServiceSpec.model_validate(_service(configs=[{"ConfigName": "site.conf", "Runtime": {}}]))
    resolve_references(spec, _state())  # an empty Runtime is what Go clients send for "none"
    spec = ServiceSpec.model_validate(_service(configs=[{"ConfigName": "site.conf", "Runtime": {"x": 1}}]))
    with pytest.raises(ApiError, match="Configs.0.Runtime"):
        resolve_references(spec, _state())


def test_users_are_the_services_naming_the_secret() -> None:
    state = _state()
    spec = ServiceSpec.model_validate(_service([{"SecretName": "pw"}]))
    resolve_references(spec, state)
    state.services = {"V1": Service(ID="V1", Spec=spec)}
    assert users_of(SECRET, "S1", state) == ["web"]
    assert users_of(SECRET, "S2", state) == []


# ------------------------------------------------------------------ targets


def test_targets_and_mounts() -> None:
    assert target_path("secret", SecretFile(Name="pw"), "x") == "/run/secrets/pw"
    assert target_path("secret", SecretFile(Name="/etc/pw"), "x") == "/etc/pw"
    assert target_path("config", SecretFile(Name="site.conf"), "x") == "/site.conf"
    assert target_path("config", SecretFile(Name=""), "fallback") == "/fallback"
    task = Task.model_validate({"ID": "t1", "ServiceID": "v", "Spec": {"ContainerSpec": {
        "Image": "busybox", "Secrets": [{"SecretID": "S1", "SecretName": "pw"}],
        "Configs": [{"ConfigID": "C1", "ConfigName": "c", "File": {"Name": "/c.conf"}}]}}})
    assert [(k, i, n) for k, i, n, _ in references(task)] == [("secret", "S1", "pw"), ("config", "C1", "c")]

    files = [Mount(Type="bind", Source="/tmpfs/t1/secret-0", Target="/run/secrets/pw", ReadOnly=True)]
    mounts = container_config(task, "web", "node1", files=files)["HostConfig"]["Mounts"]
    assert mounts == [{"Target": "/run/secrets/pw", "Source": "/tmpfs/t1/secret-0", "Type": "bind",
                       "ReadOnly": True}]


def test_manager_opens_each_value_once_for_the_nodes_and_forgets_removed_ones() -> None:
    key = new_key()
    mgr = Manager(node_id="m", cluster_id="c", advertise_ip="127.0.0.1", api_port=2377,
                  etcd=EtcdClient(["http://127.0.0.1:9"]), member=None, data_key=key)
    sealed = mgr.seal_value("secret", "S1", PLAIN)
    mgr.cache.state.secrets = {"S1": Secret(ID="S1", Spec=SecretSpec(Name="pw"), Sealed=sealed)}
    assert base64.b64decode(mgr.value_for_node("secret", "S1", sealed)) == PLAIN
    assert mgr._opened[("secret", "S1")][0] == sealed
    # A value sealed under another object's ID does not open: the cache is keyed by what was sealed.
    with pytest.raises(ApiError, match="cannot be opened"):
        mgr.value_for_node("secret", "S2", sealed)
    mgr.cache.state.secrets = {}
    other = mgr.seal_value("config", "C1", b"conf")
    mgr.cache.state.configs = {"C1": Config(ID="C1", Spec=ConfigSpec(Name="c"), Sealed=other)}
    mgr.value_for_node("config", "C1", other)
    assert list(mgr._opened) == [("config", "C1")]
