"""Helpers that more than one backend needs and that are no part of the :mod:`.base` interface.

Keeping them here means a server URL is redacted, and a secret scrubbed from a message, the same
way by every backend.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

#: a ``geo`` payload is ``{"lat": degrees, "lon": degrees}``; box filters are ranges on these keys
GEO_KEYS = ("lat", "lon")


def redact_uri(uri: str) -> str:
    """``uri`` with any ``user:password@`` replaced by ``***@`` (for repr and messages)."""
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def scrub_secrets(text: str, *secrets: str | None) -> str:
    """``text`` with every non-empty one of ``secrets`` replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def strip_credentials(url: str) -> str:
    """``https://user:pw@host/x`` -> ``https://host/x`` (a location for lock files and summaries)."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
