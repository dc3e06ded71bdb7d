#!/usr/bin/python
# Copyright: swarm developers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
module: ca
short_description: Show or rotate the swarm's root CA
description:
  - Returns the swarm's root CA certificate, as C(docker swarm ca) prints it, and rotates the root CA as
    C(docker swarm ca --rotate) does, to a generated root or to a given one.
  - A rotation goes through a cross-signed transition, so that no node loses contact with the managers and no
    task restarts; it ends once every node holds a certificate from the new root and trusts it alone.
version_added: 0.1.0
author:
  - swarm developers (!UNKNOWN)
extends_documentation_fragment:
  - swarm.cluster.api
  - swarm.cluster.wait
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.actiongroups
  - swarm.cluster.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details:
      - The diff shows the root CA certificate and whether a rotation is in progress, before and after.
options:
  rotate:
    description:
      - Rotate to a newly generated root CA. Every run with it set rotates again.
      - Mutually exclusive with O(ca_cert).
    type: bool
    default: false
  ca_cert:
    description:
      - PEM certificate of the root CA the swarm should have. It must be a CA certificate that is in date.
      - The swarm rotates to it unless it is already the swarm's root. The root changes only when a rotation
        ends, so a run during a rotation starts it again (towards this certificate); use O(wait=true).
    type: str
  ca_key:
    description:
      - PEM private key (unencrypted) of O(ca_cert). Required with O(ca_cert).
    type: str
notes:
  - "With O(wait=true) the module waits, as the CLI does, until the rotation is over: no rotation in progress,
    and every node reports a certificate from the new root and trusts only that root. A node that is down
    holds the rotation up until it comes back or is removed."
seealso:
  - module: swarm.cluster.swarm
  - module: swarm.cluster.swarm_info
"""

EXAMPLES = r"""
- name: Show the swarm's root CA
  swarm.cluster.ca:
  register: ca

- name: Rotate to a new generated root CA and wait until every node has moved to it
  swarm.cluster.ca:
    rotate: true
    wait: true
    wait_timeout: 600

- name: Use the organisation's root CA (nothing happens if the swarm already has it)
  swarm.cluster.ca:
    ca_cert: "{{ lookup('file', 'swarm-root.crt') }}"
    ca_key: "{{ lookup('file', 'swarm-root.key') }}"
    wait: true
"""

RETURN = r"""
root_ca:
  description:
    - The swarm's root CA certificate (PEM) after the change. During a rotation it is still the old root;
      the new root replaces it when the rotation ends.
  returned: always
  type: str
  sample: "-----BEGIN CERTIFICATE-----\nMIIBajCCARCgAwIBAgIU...\n-----END CERTIFICATE-----"
rotation_in_progress:
  description: Whether a root rotation is in progress after the change.
  returned: always
  type: bool
  sample: false
nodes_rotated:
  description:
    - Of all the nodes, how many hold a certificate from the root the swarm is moving to (or has).
  returned: always
  type: str
  sample: 3 of 3
actions:
  description:
    - What the module did (or, in check mode, would do), in order.
  returned: always
  type: list
  elements: str
  sample: ["Root CA rotation started", "Root CA rotation finished: 3 of 3 nodes"]
"""

from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.swarm.cluster.plugins.module_utils._api import (
    WAIT_ARGUMENT_SPEC,
    ApiError,
    SwarmApi,
    argument_spec,
    poll,
)

CA_OPTIONS: dict[str, dict[str, Any]] = {
    "rotate": {"type": "bool", "default": False},
    "ca_cert": {"type": "str"},
    "ca_key": {"type": "str", "no_log": True},
}
# A concurrent writer makes an update fail with 409; reading again and re-planning is then safe.
_UPDATE_ATTEMPTS = 3


def same_pem(a: str, b: str) -> bool:
    return a.strip() == b.strip()


def convergence(swarm: dict[str, Any], nodes: list[dict[str, Any]]) -> tuple[bool, str]:
    """Whether a rotation is over as the docker CLI judges it, and how many nodes have moved."""
    wanted = swarm.get("TLSInfo") or {}
    issuer = (wanted.get("CertIssuerSubject"), wanted.get("CertIssuerPublicKey"))
    rotated = trusting = 0
    for node in nodes:
        tls = (node.get("Description") or {}).get("TLSInfo") or {}
        rotated += (tls.get("CertIssuerSubject"), tls.get("CertIssuerPublicKey")) == issuer
        trusting += same_pem(tls.get("TrustRoot") or "", wanted.get("TrustRoot") or "")
    done = not swarm.get("RootRotationInProgress") and rotated == trusting == len(nodes)
    return done, "%d of %d" % (rotated, len(nodes))


class CaModule:
    def __init__(self, module: AnsibleModule) -> None:
        self.module = module
        self.params = module.params
        self.api = SwarmApi(module)
        self.actions: list[str] = []

    def fail_api(self, exc: ApiError) -> None:
        self.module.fail_json(msg=exc.message, status=exc.status, api_path=exc.path, actions=self.actions)

    def state(self) -> tuple[dict[str, Any], str]:
        swarm = self.api.get("/swarm")
        return swarm, convergence(swarm, self.api.get("/nodes"))[1]

    def wanted(self, swarm: dict[str, Any]) -> bool:
        """Whether the options ask for a rotation of this swarm."""
        if self.params["rotate"]:
            return True
        cert = self.params["ca_cert"]
        return bool(cert) and not same_pem(cert, (swarm.get("TLSInfo") or {}).get("TrustRoot") or "")

    def rotate(self) -> bool:
        for attempt in range(_UPDATE_ATTEMPTS):
            swarm = self.api.get("/swarm")
            if not self.wanted(swarm):
                return False
            if self.module.check_mode:
                return True
            spec = dict(swarm["Spec"])
            ca_config = dict(spec.get("CAConfig") or {})
            if self.params["ca_cert"]:
                ca_config.update(SigningCACert=self.params["ca_cert"], SigningCAKey=self.params["ca_key"])
            ca_config["ForceRotate"] = int(ca_config.get("ForceRotate") or 0) + 1
            spec["CAConfig"] = ca_config
            try:
                self.api.call("POST", "/swarm/update", query={"version": swarm["Version"]["Index"]}, body=spec)
                return True
            except ApiError as exc:
                if exc.status != 409 or attempt + 1 == _UPDATE_ATTEMPTS:
                    self.fail_api(exc)
        return True

    def run(self) -> None:
        before = self.state()[0]
        changed = self.rotate()
        if changed:
            self.actions.append("Root CA rotation would start" if self.module.check_mode else "Root CA rotation started")
        swarm, rotated = self.state()
        if self.params["wait"] and not self.module.check_mode:
            def converged() -> tuple[bool, str]:
                return convergence(self.api.get("/swarm"), self.api.get("/nodes"))

            done, rotated = poll(converged, float(self.params["wait_timeout"]), interval=1.0)
            if not done:
                self.module.fail_json(
                    msg="the root CA rotation did not finish within %ss: %s nodes hold a certificate from the new "
                        "root (a node that is down holds it up until it returns or is removed)"
                        % (self.params["wait_timeout"], rotated),
                    changed=changed, actions=self.actions,
                )
            self.actions.append("Root CA rotation finished: %s nodes" % rotated)
            swarm = self.api.get("/swarm")

        def view(s: dict[str, Any]) -> dict[str, Any]:
            return {"root_ca": (s.get("TLSInfo") or {}).get("TrustRoot", ""),
                    "rotation_in_progress": bool(s.get("RootRotationInProgress"))}

        after = view(swarm)
        if changed and self.module.check_mode:
            after = {"root_ca": self.params["ca_cert"] or "(a new generated root)", "rotation_in_progress": True}
        self.module.exit_json(
            changed=changed, actions=self.actions, root_ca=view(swarm)["root_ca"],
            rotation_in_progress=view(swarm)["rotation_in_progress"], nodes_rotated=rotated,
            diff={"before": view(before), "after": after},
        )


def main() -> None:
    module = AnsibleModule(
        argument_spec=argument_spec(WAIT_ARGUMENT_SPEC, **CA_OPTIONS),
        mutually_exclusive=[("rotate", "ca_cert")],
        required_together=[("ca_cert", "ca_key")],
        supports_check_mode=True,
    )
    CaModule(module).run()


if __name__ == "__main__":
    main()
