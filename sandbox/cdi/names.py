"""CDI device names: ``vendor/class=name`` (the fully qualified form every request uses), the
``kind`` of a spec (``vendor/class``), and the ``cdi.k8s.io/*`` annotations device plugins send.

The character rules are the CDI spec's: vendor and class start with a letter and end with a
letter or digit, with ``-``, ``_`` and ``.`` between; a device name starts and ends with a letter
or digit and may also hold ``:`` (a GPU's ``UUID=GPU-...`` style names use none of the rest).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

ANNOTATION_PREFIX = "cdi.k8s.io/"

_VENDOR_OR_CLASS = re.compile(r"[A-Za-z]([A-Za-z0-9_.-]*[A-Za-z0-9])?")
_DEVICE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9_.:-]*[A-Za-z0-9])?")


class InvalidName(ValueError):
    """A device or kind name that is not of the CDI form."""


def parse_kind(kind: str) -> tuple[str, str]:
    """``vendor/class`` -> (vendor, class)."""
    vendor, sep, cls = kind.partition("/")
    if not sep or not _VENDOR_OR_CLASS.fullmatch(vendor) or not _VENDOR_OR_CLASS.fullmatch(cls):
        raise InvalidName(f"{kind!r} is not a CDI kind (vendor.com/class)")
    return vendor, cls


def check_device_name(name: str) -> None:
    if not _DEVICE.fullmatch(name):
        raise InvalidName(f"{name!r} is not a CDI device name (letters, digits, and '-_.:' "
                         "between)")


def parse_qualified(device: str) -> tuple[str, str]:
    """``vendor/class=name`` -> (kind, name); a name without vendor or class is refused."""
    kind, sep, name = device.partition("=")
    if not sep:
        raise InvalidName(f"{device!r} is not a fully qualified CDI device name "
                         "(vendor.com/class=name)")
    try:
        parse_kind(kind)
        check_device_name(name)
    except InvalidName as exc:
        raise InvalidName(f"{device!r} is not a fully qualified CDI device name: {exc}") from None
    return kind, name


def from_annotations(annotations: Mapping[str, str]) -> list[str]:
    """The devices ``cdi.k8s.io/<anything>`` annotations request, each value a comma-separated
    list of qualified names, in key order (the order of a map is not the client's)."""
    out: list[str] = []
    for key in sorted(annotations):
        if not key.startswith(ANNOTATION_PREFIX):
            continue
        for device in annotations[key].split(","):
            try:
                parse_qualified(device)
            except InvalidName as exc:
                raise InvalidName(f"annotation {key}: {exc}") from None
            out.append(device)
    return out
