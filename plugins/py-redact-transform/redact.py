"""E-mail and card-number redaction in JSON text, independent of the
component bindings (unit-tested natively: `python3 -m unittest` here).

The rules are those of plugins/rust-redact-transform/src/redact.rs (and of the
C and JavaScript versions), expressed as regular expressions over the UTF-8
bytes: every class is ASCII, so bytes and characters give the same matches,
and nothing needs decoding or re-encoding.
"""

import json
import re
from typing import Tuple

# A JSON string literal, and, when it is an object key, the blanks and colon after it.
_STRING = re.compile(rb'"([^"\\]*(?:\\.[^"\\]*)*)"([ \t\n\r]*:)?')
# An escape sequence inside a string literal.
_ESCAPE = re.compile(rb"(\\(?:u[0-9A-Fa-f]{4}|.))")
# An e-mail candidate: local part, '@', dot-separated labels as far as they go.
_EMAIL = re.compile(rb"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")
# A card-like candidate: digits, single spaces or hyphens between digits.
_CARD = re.compile(rb"[0-9](?:[ -]?[0-9])*")
_DIGIT = re.compile(rb"[0-9]")

DEFAULT_EMAIL_MASK = "[email]"
DEFAULT_CARD_MASK = "[card]"


def _reject(constant: str):
    raise ValueError(f"{constant} is not JSON")


class Redactor:
    def __init__(self, email_mask: str = DEFAULT_EMAIL_MASK, card_mask: str = DEFAULT_CARD_MASK):
        self.email_mask = email_mask.encode()
        self.card_mask = card_mask.encode()
        self.count = 0

    def _email(self, m: "re.Match[bytes]") -> bytes:
        labels = m[0].split(b"@", 1)[1].split(b".")
        tld = labels[-1]
        if len(labels) >= 2 and len(tld) >= 2 and tld.isalpha():
            self.count += 1
            return self.email_mask
        return m[0]

    def _card(self, m: "re.Match[bytes]") -> bytes:
        s = m[0]
        if 13 <= len(s) - s.count(b" ") - s.count(b"-") <= 19:
            self.count += 1
            return self.card_mask
        return s

    def text(self, s: bytes) -> bytes:
        """Redacts plain text (no JSON escapes): e-mails first, then cards."""
        if b"@" not in s and not _DIGIT.search(s):
            return s
        return _CARD.sub(self._card, _EMAIL.sub(self._email, s))

    def _string(self, m: "re.Match[bytes]") -> bytes:
        if m[2] is not None:  # an object key
            return m[0]
        parts = _ESCAPE.split(m[1])  # text, escape, text, escape, ..., text
        parts[::2] = [self.text(p) for p in parts[::2]]
        return b'"' + b"".join(parts) + b'"'

    def json(self, value: bytes) -> Tuple[bytes, int]:
        """Validates `value` as UTF-8 JSON; returns it with its string values
        redacted, and the number of replacements. Raises ValueError."""
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"record value is not valid UTF-8 (at byte {e.start})") from None
        try:
            json.loads(text, parse_constant=_reject)
        except (ValueError, RecursionError) as e:
            raise ValueError(f"record value is not valid JSON: {e}") from None
        self.count = 0
        out = _STRING.sub(self._string, value)
        return out, self.count
