"""pycri's default AppArmor profile (RuntimeDefault), rendered from the template below.

The profile lets a container do what its OCI spec already allows (capabilities, seccomp,
read-only and masked paths decide the rest) and denies, on top of that, the kernel interfaces a
container process has no business using even as root with extra capabilities: a second line
of defence for when the spec's own protections are weakened (a capability added, a masked path
unmounted) or have a hole. Every deny below says which escape or leak it closes.

The rendered text carries a marker, an empty child profile named after the text's own hash
(``pycri-default//text-<hash>``). The kernel lists children next to their profile in
/sys/kernel/security/apparmor/profiles, so the daemon can tell at start-up whether the loaded
profile is this text or an older one without keeping any state of its own; nothing ever
enters the child (no rule of the profile names it, and it is not a hat).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

MARKER_PREFIX = "text-"

_TEMPLATE = """\
# {name}: pycri's default AppArmor profile for containers, loaded by pycri at start-up
# (apparmor_parser -Kr). Edit pycri's template, not the loaded policy: pycri replaces a
# profile of this name whose text differs from its own.
{abi}
profile {name} flags=(attach_disconnected,mediate_deleted) {{
  # Everything a program normally does; the OCI spec decides what is really granted
  # (capabilities: the bounding set; files: the rootfs, mounts, read-only and masked paths).
  file,
  network,
  unix,
  capability,

  # Signals: from the node (the daemon, conmon and runc run unconfined, or as below) and
  # between the processes of containers under this profile; to nothing else.
  signal (receive) peer=unconfined,
  # Ubuntu confines runc itself under a profile of that name.
  signal (receive) peer=runc,
{daemon_peers}  signal (send, receive) peer={name},
  # ptrace (strace, gdb; "read" is what ps needs for /proc/<pid>/exe and environ) only
  # between processes under this profile: never into the node's processes, never from
  # other profiles' processes.
  ptrace (trace, tracedby, read, readby) peer={name},

  # No mount table changes. With CAP_SYS_ADMIN added a process could otherwise mount a
  # fresh procfs or sysfs without the masks, remount read-only paths read-write, or
  # unmount a mask (umount /proc/kcore uncovers it); pivot_root is never a container's.
  deny mount,
  deny umount,
  deny pivot_root,

  # Files directly in /proc are node-wide (sysrq-trigger, mtrr, kmsg...): no
  # writes. The same below every /proc entry that is not a process: /proc/sys (sysctls
  # such as kernel.core_pattern, kernel.modprobe and fs.binfmt_misc run a program of the
  # container's choosing on the node), /proc/irq, /proc/bus, /proc/fs, /proc/driver...
  # Namespaced sysctls are set for the container through its spec, by runc, before this
  # profile applies, so no container needs to write them itself. /proc/<pid>/ stays
  # writable: oom_score_adj, uid_map and the like are the process's own.
  deny /proc/* w,
  deny /proc/[^0-9]*/** w,
  # Magic SysRq (reboot, crash, kill everything on the node) and the node's whole memory.
  deny /proc/sysrq-trigger rwklx,
  deny /proc/kcore rwklx,

  # /sys is the node's device tree: no writes anywhere in it (only privileged containers,
  # which run unconfined, get a writable /sys).
  deny /sys/** wkl,
  # Firmware tables and EFI variables (a write to efivars can brick the machine).
  deny /sys/firmware/** rwklx,
  # The LSMs' own interfaces, this profile's policy included.
  deny /sys/kernel/security/** rwklx,
  # RAPL energy counters: a power side channel that leaks other tenants' secrets
  # (CVE-2020-8694, CVE-2020-8695).
  deny /sys/devices/virtual/powercap/** rwklx,

  # The marker: this text's hash, so pycri can tell whether the loaded profile is current.
  profile {marker} {{
  }}
}}
"""


@dataclass(frozen=True)
class RenderedProfile:
    name: str
    text: str
    marker: str  # the child profile's full name, as the kernel lists it

    @property
    def digest(self) -> str:
        return self.marker.rsplit(MARKER_PREFIX, 1)[1]


def render(name: str, *, daemon_peers: Sequence[str] = (), abi: bool = True) -> RenderedProfile:
    """The default profile named ``name``.

    ``daemon_peers``: the labels the daemon (and the conmon and runc it starts, which inherit
    its confinement) runs under when it is itself confined; their signals must be received.
    ``abi``: pin the policy to AppArmor 3.0 semantics (needs /etc/apparmor.d/abi/3.0, which
    apparmor 3 ships): otherwise a newer parser and kernel could start mediating classes the
    profile says nothing about (user namespaces, io_uring, mqueue in AppArmor 4) and deny them.
    """
    peers = "".join(f"  signal (receive) peer={p},\n" for p in daemon_peers
                    if p not in ("unconfined", name))
    fields = {"name": name, "abi": "abi <abi/3.0>,\n" if abi else "", "daemon_peers": peers}
    unmarked = _TEMPLATE.format(marker="", **fields)
    digest = hashlib.sha256(unmarked.encode()).hexdigest()[:16]
    marker = MARKER_PREFIX + digest
    return RenderedProfile(name, _TEMPLATE.format(marker=marker, **fields), f"{name}//{marker}")
