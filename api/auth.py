"""Authentication and authorisation: passwords (argon2id, IA-5), JWTs, the security middleware
and role checks (the seed's RBAC matrix is declared per route in the route tables).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import re
import secrets
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final
from uuid import UUID

import jwt
from aiohttp import web
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from api.config import ApiSection
from api.errors import ApiConfigError, Forbidden, Unauthorized, ValidationError

ROLES: Final = ("admin", "fleet_manager", "driver", "technician", "viewer")
"""The one role table; every route's roles are one of the sets below, built from it."""
ALL_ROLES: Final = ROLES
ADMINS: Final = ("admin",)
MANAGERS: Final = ("admin", "fleet_manager")
"""Who changes a tenant's fleet: the seed's CRUD column."""


def roles_except(*excluded: str) -> tuple[str, ...]:
    """Every role but `excluded` (which must be roles), in the table's order."""
    unknown = set(excluded) - set(ROLES)
    if unknown:
        raise ValueError(f"unknown roles {sorted(unknown)}")
    return tuple(role for role in ROLES if role not in excluded)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_hasher = PasswordHasher()  # argon2id with the library's RFC 9106 "low memory" defaults
# Verified against when the e-mail is unknown, so that both paths cost the same time.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


@dataclass(frozen=True, slots=True)
class AuthUser:
    """The authenticated caller, from a verified access token."""

    id: UUID
    tenant_id: UUID
    role: str
    email: str
    driver_id: UUID | None = None

    @property
    def is_driver(self) -> bool:
        """Drivers see only their assigned vehicle."""
        return self.role == "driver"


USER_KEY: web.RequestKey[AuthUser] = web.RequestKey("user", AuthUser)
"""Where the auth middleware puts the authenticated caller on the request."""


# -- passwords -------------------------------------------------------------------------------

PASSWORD_MIN_LEN = 8
PASSWORD_MAX_LEN = 128
_PASSWORD_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"[A-Z]"), "an uppercase letter"),
    (re.compile(r"[a-z]"), "a lowercase letter"),
    (re.compile(r"[0-9]"), "a digit"),
    (re.compile(r"[^A-Za-z0-9]"), "a special character"),
)


def password_problems(password: str, email: str | None = None) -> list[str]:
    """IA-5 complexity rules of the seed; returns what is missing (empty = acceptable)."""
    problems: list[str] = []
    if len(password) < PASSWORD_MIN_LEN:
        problems.append(f"at least {PASSWORD_MIN_LEN} characters")
    if len(password) > PASSWORD_MAX_LEN:
        problems.append(f"at most {PASSWORD_MAX_LEN} characters")
    problems.extend(f"must contain {what}" for rx, what in _PASSWORD_RULES
                    if not rx.search(password))
    if email and password.lower() == email.lower():
        problems.append("must differ from the e-mail address")
    return problems


def hash_password(password: str, email: str | None = None) -> str:
    """Validate against IA-5 and return an argon2id PHC hash; ValidationError names `password`."""
    problems = password_problems(password, email)
    if problems:
        raise ValidationError("password does not meet the rules: " + "; ".join(problems),
                              field="password")
    return _hasher.hash(password)


def _verify(stored_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(stored_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


async def verify_password(stored_hash: str | None, password: str) -> bool:
    """Check a password off the event loop (argon2 is deliberately slow)."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, _verify, stored_hash or _DUMMY_HASH, password) \
        and stored_hash is not None


def needs_rehash(stored_hash: str) -> bool:
    """True when the hash was made with weaker parameters than today's."""
    try:
        return _hasher.check_needs_rehash(stored_hash)
    except InvalidHashError:
        return False


# -- tokens ----------------------------------------------------------------------------------

VERIFIED_TOKENS_MAX = 10_000
"""Access tokens whose verified claims one process keeps (about 0.5 KB each)."""


class VerifiedTokens:
    """Bounded LRU of verified access tokens: sha256(token) -> (caller, `exp` in epoch s).

    Verifying a JWT costs more than the rest of a cached request (PyJWT checks every
    character of the base64 segments in Python), so a token is verified once per process
    and its caller reused until the token's own expiry. Only tokens that passed the full
    check are stored, keyed by their digest (the process keeps no bearer tokens); an entry
    is never served at or after `exp`. Access tokens are not revocable (logout revokes
    refresh tokens only, docs/api.md), so this changes no outcome, only its cost.
    """

    def __init__(self, max_entries: int = VERIFIED_TOKENS_MAX,
                 clock: Callable[[], float] = time.time) -> None:
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[bytes, tuple[AuthUser, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def key(token: str) -> bytes:
        """The cache key of a token."""
        return hashlib.sha256(token.encode()).digest()

    def get(self, key: bytes) -> AuthUser | None:
        """The caller of a verified, unexpired token; raises Unauthorized once it expired."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        user, exp = entry
        if self.clock() >= exp:  # PyJWT's rule: expired when exp <= now
            del self._entries[key]
            raise Unauthorized("token expired", code="token_expired")
        self._entries.move_to_end(key)
        return user

    def put(self, key: bytes, user: AuthUser, exp: float) -> None:
        """Remember a verified token; the least recently used entry goes when full."""
        self._entries[key] = (user, exp)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


class TokenIssuer:
    """Signs and verifies access and refresh tokens with one configured HMAC key."""

    def __init__(self, section: ApiSection, *, verified: VerifiedTokens | None = None) -> None:
        secret = section.jwt_secret
        if section.environment == "production":
            if len(secret) < 32:
                raise ApiConfigError("api.jwt_secret must be set (>= 32 characters) in production")
            if section.dev_auth_bypass:
                raise ApiConfigError("api.dev_auth_bypass is refused with environment=production")
        self.secret = secret or secrets.token_urlsafe(48)
        self.algorithm = section.jwt_algorithm
        self.ttl_s = section.jwt_ttl_s
        self.refresh_ttl_s = section.refresh_ttl_s
        # Per issuer, hence per signing key: a key change can never reuse an old verdict.
        self.verified = verified if verified is not None else VerifiedTokens()

    def access_token(self, user: AuthUser, *, now: float | None = None) -> str:
        """A signed access token for `user`."""
        iat = int(now if now is not None else time.time())
        claims: dict[str, Any] = {
            "sub": str(user.id), "tenant_id": str(user.tenant_id), "role": user.role,
            "email": user.email, "typ": "access", "iat": iat, "exp": iat + self.ttl_s,
            "jti": uuid.uuid4().hex,
        }
        if user.driver_id is not None:
            claims["driver_id"] = str(user.driver_id)
        return jwt.encode(claims, self.secret, algorithm=self.algorithm)

    def refresh_token(self, user: AuthUser, jti: UUID, *, now: float | None = None) -> str:
        """A signed refresh token whose id is stored in api_refresh_tokens."""
        iat = int(now if now is not None else time.time())
        claims = {"sub": str(user.id), "tenant_id": str(user.tenant_id), "typ": "refresh",
                  "iat": iat, "exp": iat + self.refresh_ttl_s, "jti": str(jti)}
        return jwt.encode(claims, self.secret, algorithm=self.algorithm)

    def decode(self, token: str, *, typ: str) -> dict[str, Any]:
        """Verify signature, algorithm, expiry and type; raises Unauthorized."""
        try:
            claims: dict[str, Any] = jwt.decode(
                token, self.secret, algorithms=[self.algorithm],
                options={"require": ["exp", "iat", "sub", "typ"]})
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("token expired", code="token_expired") from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized("invalid token", code="invalid_token") from exc
        if claims.get("typ") != typ:
            raise Unauthorized("wrong token type", code="invalid_token")
        return claims

    def user_from_access(self, token: str) -> AuthUser:
        """The caller encoded in a verified access token (verified once, then cached)."""
        key = self.verified.key(token)
        known = self.verified.get(key)
        if known is not None:
            return known
        claims = self.decode(token, typ="access")
        try:
            driver = claims.get("driver_id")
            role = str(claims["role"])
            user = AuthUser(id=UUID(claims["sub"]), tenant_id=UUID(claims["tenant_id"]),
                            role=role, email=str(claims.get("email", "")),
                            driver_id=UUID(driver) if driver else None)
        except (KeyError, ValueError, TypeError) as exc:
            raise Unauthorized("invalid token claims", code="invalid_token") from exc
        if role not in ROLES:
            raise Unauthorized("invalid token claims", code="invalid_token")
        # PyJWT accepted `exp` as int(exp) > now; the cached entry keeps that very limit.
        self.verified.put(key, user, int(claims["exp"]))
        return user


TOKENS_KEY: web.AppKey[TokenIssuer] = web.AppKey("tokens", TokenIssuer)


def bearer_token(request: web.Request) -> str | None:
    """The token from ``Authorization: Bearer ...``, if any."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


# -- route protection ------------------------------------------------------------------------

_ROLES_ATTR = "__fleet_roles__"
_PUBLIC_ATTR = "__fleet_public__"


def require_roles(*roles: str) -> Callable[[Handler], Handler]:
    """Decorator: the handler needs an authenticated user with one of `roles` (else 403)."""
    unknown = set(roles) - set(ROLES)
    if unknown or not roles:
        raise ValueError(f"unknown roles {sorted(unknown)}")

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def checked(request: web.Request) -> web.StreamResponse:
            user: AuthUser | None = request.get(USER_KEY)
            if user is None:
                raise Unauthorized("authentication required")
            if user.role not in roles:
                raise Forbidden("insufficient permissions",
                                details={"required": list(roles), "current": user.role})
            return await handler(request)

        setattr(checked, _ROLES_ATTR, tuple(roles))
        return checked

    return wrap


def public(handler: Handler) -> Handler:
    """Mark a handler as reachable without a token (login, health, the map's static files)."""
    setattr(handler, _PUBLIC_ATTR, True)
    return handler


def handler_roles(handler: Any) -> tuple[str, ...] | None:
    """The roles a handler was declared with (None for public handlers)."""
    roles = getattr(handler, _ROLES_ATTR, None)
    return tuple(roles) if roles is not None else None


def is_public(handler: Any) -> bool:
    """True for handlers marked with `public`."""
    return bool(getattr(handler, _PUBLIC_ATTR, False))


def current_user(request: web.Request) -> AuthUser:
    """The authenticated user of a protected handler."""
    user: AuthUser | None = request.get(USER_KEY)
    if user is None:
        raise Unauthorized("authentication required")
    return user


def identify(request: web.Request) -> tuple[AuthUser | None, Unauthorized | None]:
    """Who calls: a user from a valid token, or the reason the token was refused."""
    token = bearer_token(request)
    tokens = request.app[TOKENS_KEY]
    if token is None:
        section: ApiSection = request.app[SECTION_KEY]
        if section.dev_auth_bypass and section.dev_tenant_id:
            # Development flag only; TokenIssuer refuses it together with production.
            return AuthUser(id=UUID(int=0), tenant_id=UUID(section.dev_tenant_id),
                            role="admin", email="dev@localhost"), None
        return None, Unauthorized("authentication required")
    try:
        return tokens.user_from_access(token), None
    except Unauthorized as err:
        return None, err


SECTION_KEY: web.AppKey[ApiSection] = web.AppKey("api_section", ApiSection)
