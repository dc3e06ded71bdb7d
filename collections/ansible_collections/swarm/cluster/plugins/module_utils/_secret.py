# Copyright: swarm developers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""What the secret and config modules share: the value, its digest label, and the plan to converge."""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.swarm.cluster.plugins.module_utils._api import SwarmApi, argument_spec

DIGEST_LABEL = "ansible_key"

# Kept in step with plugins/doc_fragments/secret_data.py.
OPTIONS: dict[str, dict[str, Any]] = {
    "name": {"type": "str", "required": True},
    "data": {"type": "str", "no_log": True},
    "data_is_b64": {"type": "bool", "default": False},
    "data_src": {"type": "path"},
    "labels": {"type": "dict"},
    "force": {"type": "bool", "default": False},
    "state": {"type": "str", "default": "present", "choices": ["present", "absent"]},
}


def value_of(module: AnsibleModule) -> bytes:
    params = module.params
    if params["data_src"] is not None:
        try:
            with open(params["data_src"], "rb") as source:
                return source.read()
        except OSError as exc:
            module.fail_json(msg="data_src: cannot read %s: %s" % (params["data_src"], exc.strerror))
    if params["data_is_b64"]:
        try:
            return base64.b64decode(params["data"], validate=True)
        except (binascii.Error, ValueError):
            module.fail_json(msg="data: data_is_b64 is set but data is not valid base64")
    return params["data"].encode("utf-8")


def plan(current: dict[str, Any] | None, labels: dict[str, str], force: bool) -> str:
    """``create``, ``replace`` (the value changed, or forced), ``update`` (labels only) or ``none``."""
    if current is None:
        return "create"
    have = current["Spec"].get("Labels") or {}
    if force or have.get(DIGEST_LABEL) != labels[DIGEST_LABEL]:
        return "replace"
    return "update" if have != labels else "none"


def run(kind: str) -> None:
    """The module for ``kind`` (``secret`` or ``config``)."""
    module = AnsibleModule(
        argument_spec=argument_spec(**OPTIONS),
        mutually_exclusive=[("data", "data_src")],
        required_if=[("state", "present", ("data", "data_src"), True)],
        supports_check_mode=True,
    )
    api = SwarmApi(module)
    params = module.params
    path = "/%ss" % kind
    name = params["name"]
    current = api.file_object_named(kind, name)
    before = {"name": name, "labels": current["Spec"].get("Labels") or {}} if current else {}
    id_key = "%s_id" % kind
    if params["state"] == "absent":
        if current is not None and not module.check_mode:
            api.delete("%s/%s" % (path, current["ID"]))
        module.exit_json(changed=current is not None, **{id_key: None}, diff={"before": before, "after": {}})

    value = value_of(module)
    labels = {str(k): str(v) for k, v in (params["labels"] or {}).items()}
    labels[DIGEST_LABEL] = hashlib.sha224(value).hexdigest()
    action = plan(current, labels, params["force"])
    obj_id = current["ID"] if current else None
    if action != "none" and not module.check_mode:
        spec = {"Name": name, "Labels": labels}
        if action == "update":
            api.post("%s/%s/update" % (path, obj_id), spec, query={"version": current["Version"]["Index"]})
        else:
            if action == "replace":
                api.delete("%s/%s" % (path, obj_id))
            spec["Data"] = base64.b64encode(value).decode("ascii")
            obj_id = api.post("%s/create" % path, spec)["ID"]
    module.exit_json(changed=action != "none", operation=action, **{id_key: obj_id},
                     diff={"before": before, "after": {"name": name, "labels": labels}})
