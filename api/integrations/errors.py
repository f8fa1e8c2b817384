"""Exceptions of the integrations package: one root, vendor errors translated at the boundary."""

from __future__ import annotations

from core.errors import FleetError


class IntegrationError(FleetError):
    """Root of every error raised by api.integrations."""


class IntegrationConfigError(IntegrationError):
    """A setting is missing or wrong (e.g. no token key configured)."""


class TokenCipherError(IntegrationError):
    """A stored secret cannot be decrypted (wrong key or tampered ciphertext)."""


class VendorError(IntegrationError):
    """A vendor API answered with an error that retrying will not fix."""

    def __init__(self, message: str, *, status: int | None = None, body: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class VendorUnavailableError(VendorError):
    """The vendor kept failing (5xx, 429 or network) after every retry."""


class CursorExpiredError(VendorError):
    """Samsara no longer accepts the stored feed cursor; the feed must restart."""


class NotConnectedError(IntegrationError):
    """No (valid) credentials for this tenant or vehicle: the owner must connect again."""
