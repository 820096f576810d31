"""Secrets given as `<NAME>_FILE` (Docker secrets): the value is the file's content less one
trailing newline; every refusal is one line naming the variable and the path, never the value.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.settings import Settings

SECRETS = {
    "NEPHELIOS_WEBHOOK_SECRET": "webhook_secret",
    "NEPHELIOS_ADMIN_TOKEN": "admin_token",
    "NEPHELIOS_GITHUB_TOKEN": "github_token",
}
names = pytest.mark.parametrize("name", sorted(SECRETS))


def secret_file(tmp_path: Path, content: bytes) -> Path:
    path = tmp_path / "secret"
    path.write_bytes(content)
    return path


def refusal(environ: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(environ)
    message = str(caught.value)
    assert "\n" not in message
    assert "hunter" not in message
    return message


@names
@pytest.mark.parametrize(
    ("content", "value"),
    [(b"hunter2\n", "hunter2"), (b"hunter2", "hunter2"), (b"hunter 2\n", "hunter 2")],
)
def test_the_value_is_the_file_less_one_trailing_newline(
    tmp_path: Path, name: str, content: bytes, value: str
) -> None:
    path = secret_file(tmp_path, content)
    settings = Settings.from_env({f"{name}_FILE": str(path)})
    assert getattr(settings, SECRETS[name]) == value
    assert "hunter" not in repr(settings)


@names
def test_an_empty_variable_beside_the_file_is_not_both_set(tmp_path: Path, name: str) -> None:
    path = secret_file(tmp_path, b"hunter2\n")
    settings = Settings.from_env({name: "", f"{name}_FILE": str(path)})
    assert getattr(settings, SECRETS[name]) == "hunter2"


@names
def test_both_set_is_refused_naming_the_variable(tmp_path: Path, name: str) -> None:
    path = secret_file(tmp_path, b"hunter2\n")
    message = refusal({name: "hunter3", f"{name}_FILE": str(path)})
    assert message.startswith(f"environment: {name}: {name}_FILE is set too; set one")


@names
@pytest.mark.parametrize(
    ("where", "reason"),
    [
        ("missing", "cannot read it: No such file or directory"),
        (".", "cannot read it: Is a directory"),
    ],
)
def test_an_unreadable_file_is_named_with_its_path(
    tmp_path: Path, name: str, where: str, reason: str
) -> None:
    path = tmp_path / where
    message = refusal({f"{name}_FILE": str(path)})
    assert message.startswith(f"environment: {name}_FILE: {reason}")
    assert message.endswith(f"(got {str(path)!r})")


@names
@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "the file is empty"),
        (b"\n", "the file is empty"),
        (b"hunter2\xff\n", "the file is not UTF-8 text"),
        (b"hunter2" * 10_000, "the file is larger than 64 KiB"),
    ],
)
def test_files_that_hold_no_usable_secret_are_refused(
    tmp_path: Path, name: str, content: bytes, reason: str
) -> None:
    path = secret_file(tmp_path, content)
    message = refusal({f"{name}_FILE": str(path)})
    assert message == f"environment: {name}_FILE: {reason} (got {str(path)!r})"


@names
@pytest.mark.parametrize(
    "content", [b"hunter2\r\n", b"hunter2\n\n", b"hun\x00ter2\n", b"hunter2\x7f", b"\nhunter2"]
)
def test_control_characters_in_the_file_are_refused_unseen(
    tmp_path: Path, name: str, content: bytes
) -> None:
    path = secret_file(tmp_path, content)
    message = refusal({f"{name}_FILE": str(path)})
    assert message == (f"environment: {name}_FILE: contains control characters (got {str(path)!r})")


def test_a_refused_secret_does_not_chain_an_error_quoting_it(tmp_path: Path) -> None:
    path = secret_file(tmp_path, b"hunter2\xff")
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"NEPHELIOS_ADMIN_TOKEN_FILE": str(path)})
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


@names
@pytest.mark.parametrize("content", [b" hunter2\n", b"hunter2 \n", b"\xef\xbb\xbfhunter2\n"])
def test_blanks_around_the_secret_or_a_bom_are_refused(
    tmp_path: Path, name: str, content: bytes
) -> None:
    # Such a secret can never match what GitHub or a client sends; say so at start-up.
    path = secret_file(tmp_path, content)
    assert "leading or trailing blanks or a BOM" in refusal({f"{name}_FILE": str(path)})
    assert "leading or trailing blanks" in refusal({name: content.decode().rstrip("\n")})


def test_tokens_sent_in_http_headers_must_be_ascii(tmp_path: Path) -> None:
    path = secret_file(tmp_path, "hunter2€\n".encode())
    for name in ("NEPHELIOS_ADMIN_TOKEN", "NEPHELIOS_GITHUB_TOKEN"):
        assert "must be ASCII" in refusal({f"{name}_FILE": str(path)})
    # The webhook secret is only an HMAC key: any text GitHub was given works.
    settings = Settings.from_env({"NEPHELIOS_WEBHOOK_SECRET_FILE": str(path)})
    assert settings.webhook_secret == "hunter2€"
