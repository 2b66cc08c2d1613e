"""Text from untrusted sources (trace text, feedback comments, inbox files) made safe to
print on a terminal: control characters are shown, not obeyed.

An ESC or OSC sequence in a user's comment could otherwise clear the screen, rewrite a
line, hide text or plant a hyperlink in front of a reviewer; a bidi override can make text
read differently from what it is. Newline and tab are kept (they only move the cursor
forward); everything else that a terminal interprets is rendered as a visible escape.
"""

from __future__ import annotations

import re

# C0 controls except tab and newline, DEL, C1 controls (0x9b is a one-byte CSI), bidi
# embeddings/overrides/isolates and marks, line/paragraph separators, and lone surrogates
# (which cannot even be encoded for output).
_UNSAFE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
    "\ud800-\udfff]"
)


def _visible(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(text: object) -> str:
    """``str(text)`` with every terminal control character rendered visibly (``\\x1b``)."""
    return _UNSAFE.sub(_visible, str(text))
