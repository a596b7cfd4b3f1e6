"""The uid, gid and groups a container's process runs as, read from the image's own files.

Precedence follows the CRI: ``run_as_user`` (0 is a real value: root), else ``run_as_username``,
else the image's USER (``""``, ``uid``, ``name``, ``uid:gid``, ``name:group``...). A CRI user
replaces the image's USER entirely, its group part included. ``run_as_group`` is only accepted
together with a CRI user, as the CRI requires (critest creates one without and expects an error).

Names are looked up in the rootfs's /etc/passwd and /etc/group, which the image controls:

- the files are opened through ``open_in_root``: symlinks resolve inside the rootfs only, so a
  ``/etc/passwd -> /proc/self/root/etc/passwd`` reads nothing of the host (CVE-2024-5154,
  CVE-2024-9676);
- only regular files are opened, non-blocking, so a FIFO or device node there cannot hang or
  poke the host; they are capped at ``MAX_FILE_BYTES``;
- ids are ASCII decimal digits up to 2^32-1. A larger value is an error, never truncated to
  something that may be 0 (CVE-2024-40635); an entry with such an id is ignored.

``additional_gids`` leaves the primary gid out: ``id -G`` prints the gid first either way, and
ContainerStatus reports ``[gid, *additional_gids]``, the list critest expects (it sorts it).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sandbox.errors import SandboxError
from sandbox.securejoin import open_in_root

MAX_ID = 2**32 - 1
MAX_FILE_BYTES = 4 * 1024 * 1024  # far above any real passwd/group; a bound on what we hold

ETC_PASSWD = "/etc/passwd"  # noqa: S105 (a path, not a password)
ETC_GROUP = "/etc/group"


@dataclass(frozen=True)
class Identity:
    uid: int
    gid: int
    # The image's groups (Merge policy) in /etc/group order, then the CRI's; no duplicates, and
    # never the primary gid.
    additional_gids: tuple[int, ...]
    username: str  # "" when the uid has no passwd entry
    home: str  # from passwd, "/" when unknown (used for HOME env)


class UserError(SandboxError, ValueError):
    """The requested user or group is invalid or not found in the image."""


@dataclass(frozen=True)
class PasswdEntry:
    name: str
    uid: int
    gid: int
    home: str


@dataclass(frozen=True)
class GroupEntry:
    name: str
    gid: int
    members: tuple[str, ...]


def _quote(text: str) -> str:
    # Names come from the image or the API: escape control characters before they reach a log.
    return json.dumps(text, ensure_ascii=False)


def _is_digits(text: str) -> bool:
    # str.isdigit alone accepts superscripts and non-Latin digits; int() accepts "+1", " 1" and "1_0".
    return text.isascii() and text.isdigit()


def _id_value(text: str) -> int | None:
    """The id in ``text`` when it is 0..MAX_ID in ASCII decimal, else None."""
    if not _is_digits(text):
        return None
    digits = text.lstrip("0") or "0"
    if len(digits) > len(str(MAX_ID)):  # also keeps int() clear of its digit-count limit
        return None
    value = int(digits)
    return value if value <= MAX_ID else None


def _lines(text: str) -> list[list[str]]:
    rows = []
    for raw in text.split("\n"):
        line = raw.strip()
        if line and not line.startswith("#"):
            rows.append(line.split(":"))
    return rows


def parse_passwd(text: str) -> list[PasswdEntry]:
    """Entries of a passwd file, in file order; malformed lines and bad ids are skipped."""
    entries = []
    for fields in _lines(text):
        if len(fields) < 4 or not fields[0]:
            continue
        uid, gid = _id_value(fields[2]), _id_value(fields[3])
        if uid is None or gid is None:
            continue
        home = fields[5] if len(fields) > 5 and fields[5] else "/"
        entries.append(PasswdEntry(fields[0], uid, gid, home))
    return entries


def parse_group(text: str) -> list[GroupEntry]:
    """Entries of a group file, in file order; malformed lines and bad ids are skipped."""
    entries = []
    for fields in _lines(text):
        if len(fields) < 3 or not fields[0]:
            continue
        gid = _id_value(fields[2])
        if gid is None:
            continue
        members = fields[3].split(",") if len(fields) > 3 else []
        entries.append(GroupEntry(fields[0], gid, tuple(m.strip() for m in members if m.strip())))
    return entries


def read_etc_file(rootfs: Path, path: str) -> str:
    """The text of ``path`` in the rootfs; "" when it is missing, unreadable or not a regular file."""
    try:
        fd = open_in_root(rootfs, path, os.O_RDONLY | os.O_NONBLOCK, regular_only=True)
    except OSError:
        return ""
    chunks: list[bytes] = []
    total = 0
    try:
        # Read to EOF rather than trusting st_size: the file may be larger than it said.
        while chunk := os.read(fd, min(1 << 16, MAX_FILE_BYTES + 1 - total)):
            chunks.append(chunk)
            total += len(chunk)
            if total > MAX_FILE_BYTES:
                raise UserError(f"{path} of the image is larger than {MAX_FILE_BYTES} bytes")
    except OSError:
        return ""
    finally:
        os.close(fd)
    # "replace": a name with invalid UTF-8 simply matches nothing we are asked for.
    return b"".join(chunks).decode("utf-8", errors="replace")


def _cri_id(value: int, what: str) -> int:
    if not 0 <= value <= MAX_ID:
        raise UserError(f"{what} {value} is out of range 0..{MAX_ID}")
    return value


def _numeric(text: str, what: str) -> int | None:
    """The id when ``text`` is numeric (error when out of range), None when it is a name."""
    if not _is_digits(text.lstrip("+-")):
        return None
    value = _id_value(text)  # None for a sign ("-1" must not become a name lookup) or overflow
    if value is None:
        raise UserError(f"{what} {_quote(text)} is not a number in 0..{MAX_ID}")
    return value


def _split_image_user(spec: str) -> tuple[str, str | None]:
    if ":" not in spec:
        return spec, None
    user, _, group = spec.partition(":")
    if not user or not group or ":" in group:
        raise UserError(f"image user {_quote(spec)} is not of the form user[:group]")
    return user, group


def _user_by_name(passwd: list[PasswdEntry], name: str) -> PasswdEntry:
    for entry in passwd:
        if entry.name == name:
            return entry
    raise UserError(f"user {_quote(name)} not found in /etc/passwd of the image")


def _user_by_uid(passwd: list[PasswdEntry], uid: int) -> PasswdEntry | None:
    return next((entry for entry in passwd if entry.uid == uid), None)


def _group_gid(groups: list[GroupEntry], spec: str) -> int:
    gid = _numeric(spec, "group")
    if gid is not None:
        return gid
    for entry in groups:
        if entry.name == spec:
            return entry.gid
    raise UserError(f"group {_quote(spec)} not found in /etc/group of the image")


def _others(ids: Sequence[int], primary: int) -> tuple[int, ...]:
    return tuple(i for i in dict.fromkeys(ids) if i != primary)


def resolve_identity(rootfs: Path, *, image_user: str, run_as_user: int | None,
                     run_as_username: str | None, run_as_group: int | None,
                     supplemental_groups: Sequence[int], strict_groups: bool) -> Identity:
    """Resolve who the container's process runs as; raise ``UserError`` for a bad request.

    ``strict_groups`` is the CRI's SupplementalGroupsPolicy=Strict: the groups /etc/group lists
    the user in are then left out. ``rootfs`` must exist (``FileNotFoundError`` otherwise);
    missing /etc files inside it just mean that no names are known.
    """
    if run_as_group is not None and run_as_user is None and not run_as_username:
        raise UserError("run_as_group is set without run_as_user or run_as_username")
    os.stat(rootfs)  # a missing rootfs is the caller's bug, not an image without /etc/passwd
    passwd = parse_passwd(read_etc_file(rootfs, ETC_PASSWD))
    groups = parse_group(read_etc_file(rootfs, ETC_GROUP))

    group_spec: str | None = None
    entry: PasswdEntry | None
    if run_as_user is not None:
        uid = _cri_id(run_as_user, "run_as_user")
        entry = _user_by_uid(passwd, uid)
    elif run_as_username:
        entry = _user_by_name(passwd, run_as_username)
        uid = entry.uid
    else:
        user_spec, group_spec = _split_image_user(image_user)
        numeric = _numeric(user_spec, "image user") if user_spec else 0
        if numeric is not None:
            uid = numeric
            entry = _user_by_uid(passwd, uid)
        else:
            entry = _user_by_name(passwd, user_spec)
            uid = entry.uid

    if run_as_group is not None:
        gid = _cri_id(run_as_group, "run_as_group")
    elif group_spec is not None:
        gid = _group_gid(groups, group_spec)
    else:
        gid = entry.gid if entry else 0

    username = entry.name if entry else ""
    image_gids = [] if strict_groups or not username else [g.gid for g in groups if username in g.members]
    cri_gids = [_cri_id(g, "supplemental group") for g in supplemental_groups]
    return Identity(
        uid=uid,
        gid=gid,
        additional_gids=_others([*image_gids, *cri_gids], gid),
        username=username,
        home=entry.home if entry else "/",
    )
