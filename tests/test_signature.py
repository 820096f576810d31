"""Signature checks: the pure function, on GitHub's published vector and on tampering."""

from __future__ import annotations

import pytest

from pipeline.core.github import verify_signature
from pipeline.errors import InvalidSignature
from tests.support import sign

# From GitHub's "Validating webhook deliveries" documentation.
DOCS_SECRET = "It's a Secret to Everybody"
DOCS_BODY = b"Hello, World!"
DOCS_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"


def test_github_documentation_vector_verifies() -> None:
    verify_signature(DOCS_BODY, DOCS_SIGNATURE, DOCS_SECRET)


def test_uppercase_hex_digest_verifies() -> None:
    scheme, digest = DOCS_SIGNATURE.split("=")
    verify_signature(DOCS_BODY, f"{scheme}={digest.upper()}", DOCS_SECRET)


@pytest.mark.parametrize(
    ("body", "header", "secret"),
    [
        (DOCS_BODY + b" ", DOCS_SIGNATURE, DOCS_SECRET),
        (DOCS_BODY, DOCS_SIGNATURE, DOCS_SECRET + "x"),
        (DOCS_BODY, None, DOCS_SECRET),
        (DOCS_BODY, "", DOCS_SECRET),
        (DOCS_BODY, DOCS_SIGNATURE.replace("sha256", "sha1"), DOCS_SECRET),
        (DOCS_BODY, "sha256=", DOCS_SECRET),
        (DOCS_BODY, DOCS_SIGNATURE[:-1], DOCS_SECRET),
        (DOCS_BODY, DOCS_SIGNATURE, ""),
    ],
)
def test_bad_signatures_are_refused(body: bytes, header: str | None, secret: str) -> None:
    with pytest.raises(InvalidSignature):
        verify_signature(body, header, secret)


def test_error_never_carries_the_expected_digest() -> None:
    with pytest.raises(InvalidSignature) as caught:
        verify_signature(b"{}", "sha256=00", "s3cret")
    assert sign(b"{}", "s3cret").split("=")[1] not in str(caught.value)
