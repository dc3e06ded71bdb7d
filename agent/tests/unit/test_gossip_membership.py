"""SWIM's membership rules: incarnations order what is said about a member, and a member refutes
suspicions and deaths of itself with a higher incarnation."""
from swarm_agent.net.gossip.membership import Membership
from swarm_agent.net.gossip.messages import Alive, Dead, MemberRecord, Suspect


def cluster() -> Membership:
    members = Membership("me", "10.0.0.1", 7946)
    members.apply_alive(Alive("b", "10.0.0.2", 7946, 5), now=0.0)
    return members


def state(members: Membership, node: str) -> tuple[str, int]:
    member = members.get(node)
    return member.state, member.incarnation


def test_new_member_is_news() -> None:
    members = Membership("me", "10.0.0.1", 7946)
    outcome = members.apply_alive(Alive("b", "10.0.0.2", 7946, 0), now=0.0)
    assert outcome.changed.state == "alive" and outcome.previous is None
    assert outcome.rebroadcast == Alive("b", "10.0.0.2", 7946, 0)
    assert [m.node_id for m in members.members()] == ["b", "me"]


def test_alive_needs_a_higher_incarnation() -> None:
    members = cluster()
    assert members.apply_alive(Alive("b", "10.0.0.2", 7946, 5), 1.0).rebroadcast is None
    assert members.apply_alive(Alive("b", "10.0.0.9", 7946, 4), 1.0).rebroadcast is None
    assert members.get("b").address == "10.0.0.2"
    outcome = members.apply_alive(Alive("b", "10.0.0.9", 7947, 6), 1.0)
    assert outcome.changed.address == "10.0.0.9" and outcome.changed.port == 7947
    # A higher incarnation alone is news to gossip, but nothing a consumer sees changed.
    outcome = members.apply_alive(Alive("b", "10.0.0.9", 7947, 7), 1.0)
    assert outcome.rebroadcast is not None and outcome.changed is None


def test_suspect_then_refuted_by_a_higher_incarnation() -> None:
    members = cluster()
    assert members.apply_suspect(Suspect("b", 4, "c"), 1.0).changed is None     # older incarnation
    outcome = members.apply_suspect(Suspect("b", 5, "c"), 1.0)
    assert outcome.changed.state == "suspect" and outcome.rebroadcast is not None
    # Another accuser of the same member: a confirmation, not a state change.
    outcome = members.apply_suspect(Suspect("b", 5, "d"), 1.5)
    assert outcome.confirmation_from == "d" and outcome.changed is None
    # Alive at the same incarnation does not clear a suspicion; a higher one does.
    assert members.apply_alive(Alive("b", "10.0.0.2", 7946, 5), 2.0).changed is None
    outcome = members.apply_alive(Alive("b", "10.0.0.2", 7946, 6), 2.0)
    assert outcome.changed.state == "alive" and outcome.previous == "suspect"


def test_dead_outranks_suspect_and_alive_of_the_same_incarnation() -> None:
    members = cluster()
    outcome = members.apply_dead(Dead("b", 5, "c"), 1.0)
    assert outcome.changed.state == "dead" and outcome.previous == "alive"
    assert members.apply_suspect(Suspect("b", 9, "c"), 1.0).changed is None
    assert members.apply_alive(Alive("b", "10.0.0.2", 7946, 5), 1.0).changed is None
    assert members.apply_dead(Dead("b", 5, "d"), 1.0).rebroadcast is None       # old news
    outcome = members.apply_alive(Alive("b", "10.0.0.2", 7946, 6), 2.0)
    assert outcome.changed.state == "alive" and outcome.previous == "dead"


def test_dead_sent_by_the_member_itself_means_left() -> None:
    members = cluster()
    assert members.apply_dead(Dead("b", 5, "b"), 1.0).changed.state == "left"
    assert not members.is_live("b")


def test_suspicion_of_myself_is_refuted() -> None:
    members = cluster()
    outcome = members.apply_suspect(Suspect("me", 0, "b"), 1.0)
    assert outcome.refute == Alive("me", "10.0.0.1", 7946, 1)
    assert state(members, "me") == ("alive", 1)
    assert members.apply_suspect(Suspect("me", 0, "b"), 1.0).refute is None    # older than our incarnation
    # A death certificate from a previous life (say, after a restart) is refuted above its incarnation.
    outcome = members.apply_dead(Dead("me", 7, "b"), 1.0)
    assert outcome.refute.incarnation == 8 and state(members, "me") == ("alive", 8)


def test_alive_of_myself_with_a_higher_incarnation_is_refuted() -> None:
    members = cluster()
    assert members.apply_alive(Alive("me", "10.0.0.1", 7946, 0), 1.0).refute is None
    assert members.apply_alive(Alive("me", "10.0.0.1", 7946, 3), 1.0).refute.incarnation == 4
    # Someone else claiming our ID at another address, same incarnation: we insist on ours.
    assert members.apply_alive(Alive("me", "10.0.0.7", 7946, 4), 1.0).refute.incarnation == 5


def test_leaving_ignores_own_left_message_coming_back() -> None:
    members = cluster()
    left = members.leave(1.0)
    assert left == Dead("me", 0, "me") and members.local.state == "left"
    assert members.apply_dead(left, 1.0).refute is None


def test_push_pull_dead_only_makes_a_member_suspect() -> None:
    members = cluster()
    outcome = members.apply_record(MemberRecord("b", "10.0.0.2", 7946, "dead", 5), "c", 1.0)
    assert outcome.changed.state == "suspect"
    outcome = members.apply_record(MemberRecord("b", "10.0.0.2", 7946, "left", 5), "c", 1.0)
    assert outcome.changed.state == "left"


def test_push_pull_learns_suspect_members_but_not_dead_ones() -> None:
    members = cluster()
    assert members.apply_record(MemberRecord("x", "10.0.0.8", 7946, "dead", 1), "b", 1.0).changed is None
    assert members.apply_record(MemberRecord("y", "10.0.0.9", 7946, "left", 1), "b", 1.0).changed is None
    assert members.get("x") is None and members.get("y") is None
    assert members.apply_record(MemberRecord("z", "10.0.0.9", 7946, "suspect", 2), "b", 1.0).changed.state == \
        "suspect"


def test_push_pull_of_myself_dead_is_refuted() -> None:
    members = cluster()
    outcome = members.apply_record(MemberRecord("me", "10.0.0.1", 7946, "dead", 3), "b", 1.0)
    assert outcome.refute.incarnation == 4


def test_candidates_and_reaping() -> None:
    members = cluster()
    members.apply_alive(Alive("c", "10.0.0.3", 7946, 0), 0.0)
    members.apply_dead(Dead("c", 0, "b"), now=10.0)
    members.apply_dead(Dead("b", 5, "b"), now=10.0)
    assert members.probe_candidates() == []
    assert [m.node_id for m in members.gossip_candidates(now=20.0, gossip_to_dead=15.0)] == ["c"]
    assert members.gossip_candidates(now=30.0, gossip_to_dead=15.0) == []
    assert members.live_count() == 1
    assert members.reap(now=60.0, after=60.0) == []
    assert sorted(members.reap(now=71.0, after=60.0)) == ["b", "c"]
    assert [m.node_id for m in members.members()] == ["me"]
