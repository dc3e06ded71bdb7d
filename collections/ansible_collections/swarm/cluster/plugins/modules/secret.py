#!/usr/bin/python
# Copyright: swarm developers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
module: secret
short_description: Create, replace and remove swarm secrets
description:
  - Manages one secret of a swarm cluster through a manager's API, with the options of
    M(community.docker.docker_secret) under the same names.
  - The manager stores the value sealed with the swarm's data key and hands it only to the nodes running
    a task that uses it, where the task reads it at C(/run/secrets/NAME). The API never returns a secret's
    value; the module compares the digest label instead.
version_added: 0.1.0
author:
  - swarm developers (!UNKNOWN)
extends_documentation_fragment:
  - swarm.cluster.secret_data
  - swarm.cluster.api
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.actiongroups
  - swarm.cluster.attributes
seealso:
  - module: swarm.cluster.config
  - module: community.docker.docker_secret
"""

EXAMPLES = r"""
- name: The database password, from the vault
  swarm.cluster.secret:
    name: db_password
    data: "{{ vault_db_password }}"
  no_log: true

- name: A TLS key already on the manager
  swarm.cluster.secret:
    name: site_key
    data_src: /etc/ssl/private/site.key
    labels:
      app: web

- name: A binary value
  swarm.cluster.secret:
    name: keytab
    data: "{{ lookup('file', 'krb5.keytab.b64') }}"
    data_is_b64: true

- name: Gone (refused while a service uses it)
  swarm.cluster.secret:
    name: db_password
    state: absent
"""

RETURN = r"""
secret_id:
  description:
    - The secret's ID (null once absent).
  returned: always
  type: str
  sample: hb5vzoi5zp3ukw1ss7fgtb7wq
operation:
  description:
    - V(create), V(replace) (new value, or O(force)), V(update) (labels) or V(none); in check mode, what
      would be done.
  returned: when O(state=present)
  type: str
  sample: replace
"""

from ansible_collections.swarm.cluster.plugins.module_utils._secret import run


def main() -> None:
    run("secret")


if __name__ == "__main__":
    main()
