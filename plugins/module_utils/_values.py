# -*- coding: utf-8 -*-
# Copyright: hvops.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Checks of plain values that end up in QEMU option strings, socat
addresses, interface names and timeouts. Pure.

Every pattern here is matched against the whole value (``fullmatch``): ``$``
would let a trailing newline through.
"""

import decimal
import ipaddress
import math
import posixpath
import re

from ansible_collections.hvops.kvm.plugins.module_utils._errors import ValidationError

# Linux interface names: at most 15 bytes (IFNAMSIZ less the NUL).
IFNAME_PATTERN = re.compile(r'[A-Za-z0-9_.-]{1,15}')
# What a state directory path may hold: socat parses ':' '!' ',' quotes and
# brackets in its addresses, QEMU parses ','; whitespace breaks both.
SAFE_PATH_PATTERN = re.compile(r'/[A-Za-z0-9._+@/-]*')
# VNC authentication (DES) uses at most 8 characters; QEMU cuts longer ones.
VNC_PASSWORD_MAX = 8
# The longest wait any option may ask for, in seconds (a day).
MAX_SECONDS = 86400
# A size: a number (whole or decimal) and a binary unit, K being 1024 as
# qemu-img counts it; "iB" may follow the letter ("10GiB"), and "B" alone
# means bytes. "GB" is refused: it reads as 10**9 to some and 2**30 to others.
SIZE_PATTERN = re.compile(r'\s*(\d{1,20}(?:\.\d{1,20})?)\s*(?:([KMGTP])(?:iB)?|(B))?\s*', re.IGNORECASE)
SIZE_UNITS = {'': 0, 'K': 1, 'M': 2, 'G': 3, 'T': 4, 'P': 5}
# The largest size anything here asks for: 1 PiB, far above any disk image and
# far below what overflows QEMU's 64-bit sizes.
MAX_SIZE = 1 << 50


def ifname(value, what):
    """A Linux interface name, or ValidationError naming ``what``."""
    if not isinstance(value, str) or not IFNAME_PATTERN.fullmatch(value):
        raise ValidationError('%s must be an interface name of 1 to 15 letters, digits, "_", "." or "-",'
                              ' got %r' % (what, value))
    return value


def ip_address(value, what):
    """The normalised text of an IPv4 or IPv6 address. A scope id (``%eth0``)
    is refused: it is free text that QEMU would read as part of its options."""
    text = value.strip() if isinstance(value, str) else value
    if not isinstance(text, str) or '%' in text:
        raise ValidationError('%s must be an IPv4 or IPv6 address without a scope id, got %r' % (what, value))
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ValidationError('%s must be an IPv4 or IPv6 address, got %r' % (what, value))


def safe_path(value, what):
    """An absolute path made only of characters that no option syntax reads."""
    if not isinstance(value, str) or not SAFE_PATH_PATTERN.fullmatch(value):
        raise ValidationError('%s must be an absolute path of letters, digits and "._+@/-" only'
                              ' (QEMU and socat read other characters as option syntax), got %r'
                              % (what, value))
    return value


def plain_path(value, what):
    """An absolute, normalised path (no ``.``, ``..``, ``//`` or trailing
    ``/``) without a NUL or a newline: one that names what it says."""
    if not isinstance(value, str) or not value.startswith('/') or value.startswith('//') \
            or posixpath.normpath(value) != value or '\0' in value or '\n' in value:
        raise ValidationError('%s: %r is not an absolute, normalised path' % (what, value))
    return value


def seconds(value, what, low=0.0, high=MAX_SECONDS):
    """A finite number of seconds from ``low`` to ``high`` (no inf, no nan)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not low <= value <= high:
        raise ValidationError('%s must be a number of seconds from %g to %g, got %r' % (what, low, high, value))
    return float(value)


def vnc_password(value):
    """A VNC password QEMU applies as given: 1 to 8 printable ASCII characters."""
    if not isinstance(value, str) or not value:
        raise ValidationError('vnc_password must not be empty')
    if len(value) > VNC_PASSWORD_MAX or not all(' ' <= char <= '~' for char in value):
        raise ValidationError('vnc_password must be 1 to %d printable ASCII characters: VNC'
                              ' authentication uses no more, and QEMU would silently cut a longer one'
                              % VNC_PASSWORD_MAX)
    return value


def size_bytes(value, what='size', high=MAX_SIZE):
    """A size in bytes from an integer or a text such as "10G", "512MiB",
    "1.5T", "4096B" or "1048576" (units binary: K is 1024), from 0 to ``high``.
    A size that is not a whole number of bytes is refused."""
    if isinstance(value, bool):
        raise ValidationError('%s must be a size such as 10G, 512MiB or a number of bytes, got %r'
                              % (what, value))
    if isinstance(value, int):
        number = value
    else:
        match = SIZE_PATTERN.fullmatch(value) if isinstance(value, str) else None
        if not match:
            raise ValidationError('%s must be a size such as 10G, 512MiB, 1.5T or a number of bytes (units'
                                  ' K, M, G, T, P are binary, optionally followed by iB; B alone is bytes),'
                                  ' got %r' % (what, value))
        with decimal.localcontext() as context:
            # Exact for every text the pattern lets through (at most 40 digits times 2**50).
            context.prec = 80
            exact = decimal.Decimal(match.group(1)) * (1024 ** SIZE_UNITS[(match.group(2) or '').upper()])
        if exact != exact.to_integral_value():
            raise ValidationError('%s %r is not a whole number of bytes' % (what, value))
        number = int(exact)
    if not 0 <= number <= high:
        raise ValidationError('%s must be from 0 to %d bytes, got %r' % (what, high, value))
    return number
