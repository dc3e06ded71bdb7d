"""A node's assignment stream lasts as long as its session: a node whose session its manager ended (it fell
silent, or gossip found its agent dead) has its stream closed, which tells it to open a new session, rather than
stream on while it shows Down."""

import http.client
import json
import time

import pytest

from harness.cluster import form_swarm
from swarm_agent import pki

pytestmark = pytest.mark.integration


def test_a_nodes_assignment_stream_ends_with_its_session(lab):
    manager, worker = form_swarm(lab.add_hosts("m1", "w1"))
    certs = pki.NodeCerts.load(worker.data_dir)
    assert certs is not None
    worker.kill()  # nothing else opens sessions or heartbeats as this node now
    context = pki.client_context(certs.ca_pem, certs.cert_pem, certs.key_pem)
    host, port = manager.addr.rsplit(":", 1)

    opening = http.client.HTTPSConnection(host, int(port), context=context, timeout=30)
    opening.request("POST", "/swarmd/session", body=json.dumps({"description": {"Hostname": "w1"}}),
                    headers={"Content-Type": "application/json"})
    answer = opening.getresponse()
    opened = json.loads(answer.read())
    opening.close()
    assert answer.status == 200, opened
    period = float(opened["heartbeat_period"])

    # No heartbeat follows, and the node's agent is gone: the manager ends the session (gossip finds the agent
    # dead within seconds, silence ends it after three periods), and the stream with it. An open stream carries
    # an empty line every period at least.
    stream = http.client.HTTPSConnection(host, int(port), context=context, timeout=3 * period)
    stream.request("GET", "/swarmd/assignments")
    response = stream.getresponse()
    assert response.status == 200
    started = time.monotonic()
    while response.readline():
        assert time.monotonic() - started < 6 * period + 30, "the stream outlived its session"
    stream.close()
    state = manager.json("node", "inspect", worker.node_id)[0]["Status"]["State"]
    assert state == "down", state
