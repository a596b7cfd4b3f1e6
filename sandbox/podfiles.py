"""Files the runtime writes for a pod and bind-mounts into its containers: /etc/hostname and
/etc/resolv.conf. (/etc/hosts is the kubelet's: it mounts its own.)

Every value is checked before it reaches a file: a newline inside a DNS search domain or option
would add a line of the caller's choosing to resolv.conf, the kind of injection CVE-2022-4318
made through environment values. Files are replaced atomically so a container starting
concurrently never reads half a file.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

from sandbox.errors import InvalidPodFile

HOST_RESOLV_CONF = Path("/etc/resolv.conf")
HOSTNAME_MAX = 64  # HOST_NAME_MAX: the kernel's utsname nodename holds 64 characters

# RFC 1123 labels: letters, digits and inner hyphens, at most 63 characters each; either case
# (a host-network pod inherits the node's hostname, which need not be lowercase).
_LABEL_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
# One whitespace-free printable token: a search domain or a resolver option ("ndots:5").
_TOKEN_RE = re.compile(r"[\x21-\x7e]{1,255}")


def validate_hostname(hostname: str) -> None:
    if not hostname or len(hostname) > HOSTNAME_MAX:
        raise InvalidPodFile(f"hostname must be 1 to {HOSTNAME_MAX} characters")
    if not all(_LABEL_RE.fullmatch(label) for label in hostname.split(".")):
        raise InvalidPodFile(f"hostname {hostname!r} is not a valid RFC 1123 host name")


def write_hostname(directory: Path, hostname: str) -> Path:
    """Write ``directory/hostname`` (one line) and return its path."""
    validate_hostname(hostname)
    return _write_atomic(directory / "hostname", f"{hostname}\n".encode("ascii"))


def render_resolv_conf(
    servers: Sequence[str], searches: Sequence[str], options: Sequence[str]
) -> str:
    """resolv.conf text for a pod's DNSConfig, after checking every entry."""
    lines = []
    for server in servers:
        _check_line_safe("DNS server", server)
        try:
            ipaddress.ip_address(server)
        except ValueError:
            raise InvalidPodFile(f"DNS server {server!r} is not an IP address") from None
        lines.append(f"nameserver {server}")
    if searches:
        for domain in searches:
            _check_token("DNS search domain", domain)
        lines.append("search " + " ".join(searches))
    if options:
        for option in options:
            _check_token("DNS option", option)
        lines.append("options " + " ".join(options))
    return "".join(f"{line}\n" for line in lines)


def write_resolv_conf(
    directory: Path,
    servers: Sequence[str],
    searches: Sequence[str],
    options: Sequence[str],
    host_resolv: Path = HOST_RESOLV_CONF,
) -> Path:
    """Write ``directory/resolv.conf`` and return its path.

    From the pod's DNSConfig when any of its fields is set; otherwise a copy of the host's file
    (empty if the host has none), as CRI-O does.
    """
    if servers or searches or options:
        content = render_resolv_conf(servers, searches, options).encode("ascii")
    else:
        try:
            content = host_resolv.read_bytes()
        except FileNotFoundError:
            content = b""
    return _write_atomic(directory / "resolv.conf", content)


def _check_line_safe(what: str, value: str) -> None:
    if any(c in value for c in "\n\r\0"):
        raise InvalidPodFile(f"{what} contains a newline or NUL character")


def _check_token(what: str, value: str) -> None:
    _check_line_safe(what, value)
    if not _TOKEN_RE.fullmatch(value):
        raise InvalidPodFile(
            f"{what} {value!r} must be 1 to 255 printable ASCII characters without blanks"
        )


def _write_atomic(path: Path, content: bytes) -> Path:
    # Temp file in the same directory, then rename(2): readers see the old or the new file.
    # No fsync: these live in the pod's run directory and are rewritten if the pod is re-made.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
            os.fchmod(f.fileno(), 0o644)  # readable by any container user; mkstemp makes 0600
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
