"""What verifying one bearer token costs PyJWT and `cryptography`, RS256 and ES256 (template only).

Run in the virtualenv of a project baked with `auth=jwt` (PyJWT and cryptography are
its dependencies). First make the keys and tokens (key generation is random work, so it
stays out of every count), then time each part natively (the least of five runs of
2,000 verifications):

    python bench/jwt_probe.py make /tmp/jwt.json
    python bench/jwt_probe.py time /tmp/jwt.json

Under callgrind, twice with N and M calls (the difference of the two `Collected`
totals over M - N is the instructions per verification), for one part and algorithm:

    valgrind --tool=callgrind --callgrind-out-file=/tmp/j100 \
        python bench/jwt_probe.py count /tmp/jwt.json decode RS256 100

Parts: `decode` is what the service's verifier calls per request (`PyJWT.decode` with
an already built `PyJWK`, the algorithm, audience, issuer, leeway and required
claims); `signature` is only the public-key operation (`cryptography`'s `verify` on
the signing input, over OpenSSL); `claims` is `decode` without the signature check.
The keys are made at start: RSA 2048 bits (e = 65537), EC P-256, as the tests'
identity provider makes them.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from jwt.utils import base64url_decode, der_to_raw_signature, raw_to_der_signature

ALGORITHMS = ("RS256", "ES256")
ISSUER = "http://127.0.0.1:1"
AUDIENCE = "bench"


def _make(path: str) -> None:
    """Write a token and its public JWK per algorithm to `path`."""
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "user-1",
        "iat": now,
        "nbf": now,
        "exp": now + 30 * 24 * 3600,
        "scope": "items:read items:write",
    }
    made = {}
    for algorithm in ALGORITHMS:
        private: Any = (
            rsa.generate_private_key(public_exponent=65537, key_size=2048)
            if algorithm == "RS256"
            else ec.generate_private_key(ec.SECP256R1())
        )
        token = jwt.encode(claims, private, algorithm=algorithm, headers={"kid": "k1"})
        public = json.loads(jwt.get_algorithm_by_name(algorithm).to_jwk(private.public_key()))
        made[algorithm] = {"token": token, "jwk": public | {"kid": "k1", "alg": algorithm}}
    Path(path).write_text(json.dumps(made))


def _setup(path: str, algorithm: str) -> tuple[str, jwt.PyJWK]:
    made = json.loads(Path(path).read_text())[algorithm]
    return made["token"], jwt.PyJWK(made["jwk"], algorithm=algorithm)


def _part(path: str, part: str, algorithm: str) -> Any:  # noqa: ANN401 - a callable
    token, key = _setup(path, algorithm)
    decoder = jwt.PyJWT()
    options: Any = {"require": ["exp", "iss", "aud", "sub"]}
    if part == "claims":
        options["verify_signature"] = False

    def decode() -> object:
        return decoder.decode(
            token,
            key,
            algorithms=[algorithm],
            audience=AUDIENCE,
            issuer=ISSUER,
            leeway=30.0,
            options=options,
        )

    if part in {"decode", "claims"}:
        return decode
    signing_input, _, signature_part = token.encode().rpartition(b".")
    signature = base64url_decode(signature_part)
    public = key.key
    if algorithm == "RS256":
        return lambda: public.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
    der = raw_to_der_signature(signature, public.curve)
    assert der_to_raw_signature(der, public.curve) == signature  # noqa: S101 - a sanity check
    return lambda: public.verify(der, signing_input, ec.ECDSA(hashes.SHA256()))


def main() -> None:
    """`make PATH`, `time PATH` or `count PATH <part> <algorithm> <calls>`; see above."""
    command, path = sys.argv[1:3]
    if command == "make":
        _make(path)
    elif command == "time":
        for algorithm in ALGORITHMS:
            for part in ("decode", "signature", "claims"):
                call = _part(path, part, algorithm)
                best = float("inf")
                for _ in range(5):
                    start = time.perf_counter()
                    for _ in range(2000):
                        call()
                    best = min(best, (time.perf_counter() - start) / 2000)
                sys.stdout.write(f"{algorithm} {part:<10}{best * 1e6:8.1f} us\n")
    else:
        part, algorithm, calls = sys.argv[3:]
        call = _part(path, part, algorithm)
        for _ in range(50 + int(calls)):
            call()


if __name__ == "__main__":
    main()
