"""Input rules shared by the web forms and the API, so both refuse the same things.

Rules encoded here:
- Names (model names, versions, licensee names) are printable text: no control characters,
  no format characters (bidi overrides and isolates, zero-width joiners: they make a signed
  name read differently from what was signed), no surrounding whitespace. They end up in
  owner-signed requests and the public log, where they can never be corrected.
- Usernames use Django's rule (letters, digits and @ . + - _) and are unique without regard
  to case, so `Alice` cannot pose as `alice`.
- Free text (descriptions) may hold newlines and tabs but no other control or format
  characters, and has a length cap.

Example:
    >>> printable_name("ResNet-50 v2")
    'ResNet-50 v2'
"""
from __future__ import annotations

import unicodedata

from django.contrib.auth.models import User
from django.contrib.auth.validators import UnicodeUsernameValidator
from django.core.exceptions import ValidationError

NAME_MAX = 200  # model names and licensee names
VERSION_MAX = 100
DESCRIPTION_MAX = 10_000  # characters
URL_MAX = 2000  # suspect URLs (the column's width)
USERNAME_MAX = 150

_BAD_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}  # controls, format (bidi), unassigned
_TEXT_ALLOWED = {"\n", "\t", "\r"}


def _bad_char(value: str, allowed: set[str]) -> str | None:
    for ch in value:
        if ch not in allowed and unicodedata.category(ch) in _BAD_CATEGORIES:
            return ch
    return None


def printable_name(value: str, max_length: int = NAME_MAX) -> str:
    """A one-line name of printable characters; raises ValidationError naming the bad character."""
    if len(value) > max_length:
        raise ValidationError(f"is {len(value)} characters long; keep it to {max_length}",
                              code="too_long")
    bad = _bad_char(value, set())
    if bad is not None:
        raise ValidationError(
            f"contains the invisible or control character U+{ord(bad):04X} "
            f"({unicodedata.name(bad, 'unnamed')}); use printable characters only",
            code="unprintable")
    if value != value.strip():
        raise ValidationError("starts or ends with whitespace; remove it", code="whitespace")
    if not value:
        raise ValidationError("is empty; give a name", code="blank")
    return value


def free_text(value: str, max_length: int = DESCRIPTION_MAX) -> str:
    """Multi-line text without control or bidi characters, at most `max_length` characters."""
    if len(value) > max_length:
        raise ValidationError(f"is {len(value)} characters long; keep it to {max_length}",
                              code="too_long")
    bad = _bad_char(value, _TEXT_ALLOWED)
    if bad is not None:
        raise ValidationError(
            f"contains the invisible or control character U+{ord(bad):04X} "
            f"({unicodedata.name(bad, 'unnamed')}); remove it", code="unprintable")
    return value


def new_username(value: str) -> str:
    """A username that follows Django's rule and is not taken in any letter case."""
    if len(value) > USERNAME_MAX:
        raise ValidationError(f"is {len(value)} characters long; keep it to {USERNAME_MAX}",
                              code="too_long")
    UnicodeUsernameValidator()(value)
    if User.objects.filter(username__iexact=value).exists():
        raise ValidationError(f"the username {value!r} is taken; choose another", code="taken")
    return value
