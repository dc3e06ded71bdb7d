#!/usr/bin/python
# Copyright: swarm developers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
module: config
short_description: Create, replace and remove swarm configs
description:
  - Manages one config of a swarm cluster through a manager's API, with the options of
    M(community.docker.docker_config) under the same names (C(template_driver) excepted).
  - Tasks that use a config find it as a read-only file, by default at C(/NAME). Its value is stored
    sealed like a secret's, but inspecting a config shows it.
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
  - module: swarm.cluster.secret
  - module: community.docker.docker_config
"""

EXAMPLES = r"""
- name: The proxy's configuration, rendered on the controller
  swarm.cluster.config:
    name: proxy.conf
    data: "{{ lookup('template', 'proxy.conf.j2') }}"
    labels:
      app: proxy

- name: Always a new config, even if nothing changed
  swarm.cluster.config:
    name: proxy.conf
    data_src: /srv/proxy/proxy.conf
    force: true
"""

RETURN = r"""
config_id:
  description: ID of the config, or null after O(state=absent).
  returned: always
  type: str
  sample: 4fs0iuo0ujk8ztn4bmqg4jjjh
operation:
  description: What was (in check mode, would be) done, one of V(create), V(replace), V(update), V(none).
  returned: when O(state=present)
  type: str
  sample: update
"""

from ansible_collections.swarm.cluster.plugins.module_utils._secret import run


def main() -> None:
    run("config")


if __name__ == "__main__":
    main()
