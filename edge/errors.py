"""What reaches a person: the one exception type the CLIs turn into a one-line error and a
non-zero exit, and the redaction that keeps secrets out of every error and log line.

Secrets never reach a log or an error line: :func:`redact` hides them in any text meant
for people, and :class:`RedactingFilter` applies it to every log record (``cliutil``
installs it on the CLI's log handlers).

Hidden: the password of a URL (``mqtt://user:PASS@host``, ``rtsp://user:PASS@cam``), secret
query parameters (``?token=...``, ``password=``, ``key=`` ...), ``Authorization`` header
values, and every value :func:`register` was given (the ``--serve-token``, the MQTT
password), wherever it appears.
"""

from __future__ import annotations

import logging
import re
import threading

MASK = "***"
_URL_PASSWORD = re.compile(r"(?P<keep>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@?#]*:)[^@\s/?#]+(?=@)")
_SECRET_PARAM = re.compile(r"(?i)(?P<keep>[?&;](?:token|access_token|auth|password|passwd|pwd|"
                           r"secret|api_?key|key)=)[^&\s#'\"]+")
_AUTH_HEADER = re.compile(r"(?i)(?P<keep>authorization[\"']?\s*[:=]\s*[\"']?(?:bearer|basic)\s+)"
                          r"[^\s'\"]+")
_known: set[str] = set()
_lock = threading.Lock()


def register(secret: str | None) -> None:
    """Hide ``secret`` wherever it appears from now on (ignored below 4 characters, where
    hiding it would mangle ordinary words)."""
    if secret and len(secret) >= 4:
        with _lock:
            _known.add(secret)


def redact(text: str) -> str:
    """``text`` with every secret it holds replaced by ``***``."""
    for pattern in (_URL_PASSWORD, _SECRET_PARAM, _AUTH_HEADER):
        text = pattern.sub(lambda m: m.group("keep") + MASK, text)
    with _lock:
        known = sorted(_known, key=len, reverse=True)
    for secret in known:
        text = text.replace(secret, MASK)
    return text


class RedactingFilter(logging.Filter):
    """A handler filter: the record's final message, redacted (records of every logger pass
    a handler's filters, those of paho and other libraries too)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: let logging report it as it always does
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


class FerEdgeError(Exception):
    """A user-facing error: bad input file, wrong option, corrupt model.

    The message must name the thing at fault (a path, a row, an option) and say what is wrong.
    """
