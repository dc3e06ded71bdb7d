"""The gossip keyring: AES-GCM with the second-newest key encrypting and every key decrypting."""
import pytest
from hypothesis import given
from hypothesis import strategies as st

from swarm_agent.net.gossip.keyring import OVERHEAD, AuthenticationError, Keyring

K1, K2, K3 = (bytes([n]) * 16 for n in (1, 2, 3))


@given(st.binary(max_size=2000))
def test_round_trip_and_size(plaintext: bytes) -> None:
    ring = Keyring([K1])
    sealed = ring.encrypt(plaintext)
    assert len(sealed) == len(plaintext) + OVERHEAD
    assert ring.decrypt(sealed) == plaintext


def test_nonces_differ() -> None:
    ring = Keyring([K1])
    assert ring.encrypt(b"same") != ring.encrypt(b"same")


def test_second_newest_key_encrypts() -> None:
    assert Keyring([K1]).encryption_key == K1
    assert Keyring([K2, K1]).encryption_key == K1
    assert Keyring([K3, K2, K1]).encryption_key == K2
    # A node that only has the key in use reads what a node with a newer ring sends.
    assert Keyring([K1]).decrypt(Keyring([K2, K1]).encrypt(b"x")) == b"x"
    assert Keyring([K2]).decrypt(Keyring([K3, K2, K1]).encrypt(b"x")) == b"x"


def test_any_key_of_the_ring_decrypts() -> None:
    ring = Keyring([K3, K2, K1])
    for key in (K1, K2, K3):
        assert ring.decrypt(Keyring([key]).encrypt(b"hello")) == b"hello"


def test_unknown_key_is_refused() -> None:
    with pytest.raises(AuthenticationError, match="no key"):
        Keyring([K2, K3]).decrypt(Keyring([K1]).encrypt(b"secret"))


@given(st.binary(min_size=1, max_size=64), st.data())
def test_any_tampering_is_refused(plaintext: bytes, data: st.DataObject) -> None:
    ring = Keyring([K1])
    sealed = bytearray(ring.encrypt(plaintext))
    index = data.draw(st.integers(0, len(sealed) - 1))
    sealed[index] ^= data.draw(st.integers(1, 255))
    with pytest.raises(AuthenticationError):
        ring.decrypt(bytes(sealed))


def test_short_message_is_refused() -> None:
    with pytest.raises(AuthenticationError, match="shorter"):
        Keyring([K1]).decrypt(b"\x01abc")


@pytest.mark.parametrize("keys, message", [
    ([], "1 to 3 keys"),
    ([K1, K2, K3, bytes(16)], "1 to 3 keys"),
    ([K1, b"short"], r"keys\[1\]: expected 16 bytes"),
    ([K1, "text" * 4], r"keys\[1\]: expected 16 bytes"),
    ([K1, K1], "twice"),
    (K1, "single bytes value"),
])
def test_bad_keys_are_named(keys, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Keyring(keys)


def test_repr_hides_keys() -> None:
    assert K1.hex() not in repr(Keyring([K1])) and "\\x01" not in repr(Keyring([K1]))


def test_generated_keys_fit() -> None:
    assert len(Keyring.generate_key()) == 16
    Keyring([Keyring.generate_key(), Keyring.generate_key()])
