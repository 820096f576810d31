"""One root exception for Nephelios and the small tree under it.

Errors carry their data as attributes (the key and value at fault, the build log tail, the
HTTP status) so that callers can report them without parsing messages.
"""

from __future__ import annotations


class NepheliosError(Exception):
    """Root of every error Nephelios raises on purpose."""


class ConfigError(NepheliosError):
    """A configuration file or value is unusable; raised at start-up or on admin input."""

    def __init__(self, source: str, key: str, value: object, reason: str) -> None:
        self.source = source
        self.key = key
        self.value = value
        self.reason = reason
        super().__init__(f"{source}: {key}: {reason} (got {value!r})")

    @property
    def without_value(self) -> str:
        """The message without the bad value, for answers over HTTP (it may be a secret)."""
        return f"{self.source}: {self.key}: {self.reason}"


class ConfigSyntaxError(ConfigError):
    """A file that cannot be parsed at all: the message names the place (line and column),
    never the file's content, which may not be what the user meant to point us at."""

    def __init__(self, source: str, where: str, reason: str) -> None:
        super().__init__(source, where, None, reason)
        self.args = (f"{source}: {where}: {reason}",)


class WebhookError(NepheliosError):
    """A delivery that cannot be accepted; `status` is the HTTP status to answer with."""

    status = 400


class InvalidSignature(WebhookError):
    status = 401


class PayloadTooLarge(WebhookError):
    status = 413


class DeployError(NepheliosError):
    """A deployment failed; the message is the reason recorded on the deployment."""


class FetchError(DeployError):
    pass


class BuildError(DeployError):
    def __init__(self, message: str, log_tail: str = "") -> None:
        self.log_tail = log_tail
        super().__init__(message)


class RolloutError(DeployError):
    pass


# --- admin API (issue 5) -------------------------------------------------------------------
class AdminError(NepheliosError):
    """An admin call that cannot be carried out; `status` is the HTTP status to answer with."""

    status = 400


class Unauthorized(AdminError):
    status = 401


class AdminDisabled(AdminError):
    status = 403


class NotFound(AdminError):
    status = 404


class UnknownApp(NotFound):
    pass


class Conflict(AdminError):
    status = 409


class Unprocessable(AdminError):
    """Well-formed, but the world disagrees: a branch that does not exist, nothing to roll back."""

    status = 422
