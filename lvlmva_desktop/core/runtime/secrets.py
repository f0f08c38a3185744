"""Nothing secret in anything stored: keys, tokens and passwords are kept out of the project, the audit log,
the report, the settings folder and what is printed.

The audit log is append-only and hash-chained, so a key that reached it could never be removed without
breaking the chain. Three rules keep keys out: a server URL may not carry a user name or password (the key
belongs in an environment variable, named by ``api_key_env``); the option that names that variable refuses
a value that looks like a key; and every error text from outside (a server's answer, an exception) passes
through ``scrub`` before it is stored or shown, which removes the values of keys this process read and
anything shaped like a key or a bearer token.
"""

from __future__ import annotations

import re
import threading
import urllib.parse

REDACTED = "[redacted]"

_known: set[str] = set()
_known_lock = threading.Lock()

_PATTERNS = [
    # "Bearer sk-...", "Basic dXNlcjpwYXNz", "Token abc..." (HTTP authorisation values)
    re.compile(r"(?i)\b(bearer|basic|token)(\s+)[A-Za-z0-9._~+/=-]{8,}"),
    # OpenAI-style and similar prefixed keys
    re.compile(r"\b(sk|pk|rk|hf|ghp|gho|xox[abp])[-_][A-Za-z0-9_-]{8,}"),
    # JSON web tokens
    re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}"),
    # key=value, "api_key": "value", Authorization: value
    re.compile(
        r"(?i)\b(api[_-]?key|access[_-]?token|auth[_-]?token|secret|password|passwd|pwd|authorization)"
        r"(\"?\s*[:=]\s*\"?)([^\s\"',;&}]{4,})"
    ),
]
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)([^/\s@]+)@")
# a long token mixing upper- and lower-case letters and digits (a random key; a sha256 hex digest is
# lower-case only and stays)
_RANDOM_TOKEN = re.compile(
    r"\b(?=[A-Za-z0-9_-]*[A-Z])(?=[A-Za-z0-9_-]*[a-z])(?=[A-Za-z0-9_-]*[0-9])[A-Za-z0-9_-]{24,}\b"
)
_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def remember(value: str | None) -> None:
    """A secret this process holds (a key read from the environment): ``scrub`` removes it wherever it is."""
    if value and len(value) >= 4:
        with _known_lock:
            _known.add(value)


def scrub(text: object) -> str:
    """``text`` with every known secret and anything shaped like a key, a token or a password replaced."""
    s = "" if text is None else str(text)
    with _known_lock:
        known = sorted(_known, key=len, reverse=True)
    for value in known:
        s = s.replace(value, REDACTED)
    s = _URL_USERINFO.sub(lambda m: f"{m.group(1)}{REDACTED}@", s)
    s = _PATTERNS[0].sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", s)
    s = _PATTERNS[1].sub(REDACTED, s)
    s = _PATTERNS[2].sub(REDACTED, s)
    s = _PATTERNS[3].sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", s)
    return _RANDOM_TOKEN.sub(REDACTED, s)


def has_credentials(url: str) -> bool:
    try:
        parts = urllib.parse.urlsplit(url.strip())
    except ValueError:
        return False
    return bool(parts.username or parts.password)


def without_credentials(url: str) -> str:
    """``url`` with any user name and password taken out (what may be shown or stored)."""
    try:
        parts = urllib.parse.urlsplit(url.strip())
    except ValueError:
        return scrub(url)
    if not (parts.username or parts.password):
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def looks_like_key(text: str) -> bool:
    """Whether a value given where a variable NAME belongs looks like the key itself."""
    t = text.strip()
    if not t:
        return False
    if not _VARIABLE_NAME.fullmatch(t):
        return True  # keys have dashes, dots and the like; variable names never do
    return scrub(t) != t or (len(t) >= 20 and any(c.islower() for c in t) and any(c.isdigit() for c in t))


def check_variable_name(name: str, option: str = "--api-key-env") -> None:
    """Refuse (ValueError, without echoing it) a value that is not an environment variable's name."""
    if not name:
        return
    if looks_like_key(name):
        raise ValueError(
            f"{option} takes the NAME of the environment variable that holds the server's key (for example "
            "SITE_LLM_KEY), not the key itself. What was given looks like a key, so it was neither used nor "
            "stored; set the variable (export SITE_LLM_KEY=...) and give its name."
        )
