import hashlib
import secrets

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from swarm_agent import tokens
from swarm_agent.manager.ca import RootCA


@pytest.fixture(scope="module")
def ca_pem() -> bytes:
    return RootCA.generate().cert_pem


@pytest.fixture(scope="module")
def other_ca_pem() -> bytes:
    return RootCA.generate().cert_pem


def test_base36_known_values() -> None:
    assert tokens.base36(0, 3) == "000"
    assert tokens.base36(35, 1) == "z"
    assert tokens.base36(36, 2) == "10"
    assert tokens.base36(36**5 - 1, 0) == "zzzzz"
    for _ in range(100):
        value = secrets.randbits(128)
        assert int(tokens.base36(value, 25), 36) == value


def test_new_token_has_swarm_shape_and_parses_back(ca_pem: bytes) -> None:
    token = tokens.new_token(ca_pem)
    assert len(token) == len("SWMTKN-1-") + 50 + 1 + 25
    assert token.startswith("SWMTKN-1-")
    parsed = tokens.parse_token(token)
    assert parsed.digest == tokens.ca_digest(ca_pem)
    assert len(parsed.secret) == 25
    assert token == f"SWMTKN-1-{parsed.digest}-{parsed.secret}"


def test_parse_token_tolerates_surrounding_whitespace(ca_pem: bytes) -> None:
    token = tokens.new_token(ca_pem)
    assert tokens.parse_token(f"  {token}\n") == tokens.parse_token(token)


def test_new_tokens_have_fresh_secrets(ca_pem: bytes) -> None:
    secrets_seen = {tokens.parse_token(tokens.new_token(ca_pem)).secret for _ in range(50)}
    assert len(secrets_seen) == 50


def test_ca_digest_is_sha256_of_der_in_base36(ca_pem: bytes) -> None:
    der = x509.load_pem_x509_certificate(ca_pem).public_bytes(Encoding.DER)
    digest = tokens.ca_digest(ca_pem)
    assert len(digest) == 50
    assert int(digest, 36) == int.from_bytes(hashlib.sha256(der).digest(), "big")


def test_ca_digest_is_stable_across_encodings(ca_pem: bytes, other_ca_pem: bytes) -> None:
    digest = tokens.ca_digest(ca_pem)
    assert tokens.ca_digest(ca_pem) == digest
    assert tokens.ca_digest(ca_pem.replace(b"\n", b"\r\n")) == digest
    # A bundle is identified by its first certificate.
    assert tokens.ca_digest(ca_pem + other_ca_pem) == digest
    assert tokens.ca_digest(other_ca_pem) != digest


GOOD_DIGEST = "1" * 50
GOOD_SECRET = "a" * 25


@pytest.mark.parametrize(
    ("token", "problem"),
    [
        ("", "4 '-'-separated parts"),
        ("SWMTKN-1-abc", "got 3"),
        (f"SWMTKN-1-{GOOD_DIGEST}-{GOOD_SECRET}-x", "got 5"),
        (f"SWMTKM-1-{GOOD_DIGEST}-{GOOD_SECRET}", "prefix is 'SWMTKM'"),
        (f"SWMTKN-2-{GOOD_DIGEST}-{GOOD_SECRET}", "unsupported version '2'"),
        (f"SWMTKN-1-{GOOD_DIGEST[:-1]}-{GOOD_SECRET}", "CA digest has 49 characters, expected 50"),
        (f"SWMTKN-1-{GOOD_DIGEST.upper()[:-1]}A-{GOOD_SECRET}", "CA digest is not lowercase base36"),
        (f"SWMTKN-1-{'z' * 50}-{GOOD_SECRET}", "CA digest is larger than 256 bits"),
        (f"SWMTKN-1-{GOOD_DIGEST}-{GOOD_SECRET}a", "secret has 26 characters, expected 25"),
        (f"SWMTKN-1-{GOOD_DIGEST}-{GOOD_SECRET[:-1]}_", "secret is not lowercase base36"),
        (f"SWMTKN-1-{GOOD_DIGEST}-{'z' * 25}", "secret is larger than 128 bits"),
    ],
)
def test_malformed_tokens_name_the_problem(token: str, problem: str) -> None:
    with pytest.raises(ValueError, match="^invalid join token: ") as info:
        tokens.parse_token(token)
    assert problem in str(info.value)


def test_parse_token_rejects_non_strings() -> None:
    with pytest.raises(ValueError, match="invalid join token: expected a string, got bytes"):
        tokens.parse_token(b"SWMTKN-1-x-y")  # type: ignore[arg-type]


def test_same_secret(ca_pem: bytes, other_ca_pem: bytes) -> None:
    token = tokens.new_token(ca_pem)
    secret = tokens.parse_token(token).secret
    assert tokens.same_secret(token, token)
    # After a CA rotation only the digest changes; the secret still matches.
    assert tokens.same_secret(token, f"SWMTKN-1-{tokens.ca_digest(other_ca_pem)}-{secret}")
    assert not tokens.same_secret(token, tokens.new_token(ca_pem))
    assert not tokens.same_secret(token, "SWMTKN-1-garbage")
    assert not tokens.same_secret("", token)
