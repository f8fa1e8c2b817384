"""Encryption at rest of vendor tokens: Fernet (AES-128-CBC + HMAC-SHA256), key from a setting."""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken

from api.integrations.errors import IntegrationConfigError, TokenCipherError

_MIN_SECRET_CHARS = 16


class TokenCipher:
    """Encrypts and decrypts short secrets; the key is derived from `integrations.token_key`."""

    def __init__(self, secret: str) -> None:
        if len(secret) < _MIN_SECRET_CHARS:
            raise IntegrationConfigError(
                f"integrations.token_key must have at least {_MIN_SECRET_CHARS} characters")
        # A KDF over a settings string gives a valid 32-byte Fernet key from any passphrase;
        # the domain label keeps this key distinct from other uses of the same secret.
        digest = hashlib.sha256(b"fleet-telemetry/integrations/v1\x00" + secret.encode()).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(digest))

    def encrypt(self, plaintext: str) -> bytes:
        """Ciphertext (authenticated) of `plaintext`."""
        return self._fernet.encrypt(plaintext.encode())

    def decrypt(self, ciphertext: bytes) -> str:
        """The plaintext; raises TokenCipherError when the key is wrong or the data altered."""
        try:
            return self._fernet.decrypt(bytes(ciphertext)).decode()
        except InvalidToken as exc:
            raise TokenCipherError(
                "stored secret cannot be decrypted with the configured key") from exc
