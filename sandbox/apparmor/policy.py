"""Which AppArmor profile a container runs under, and pycri's default profile in the kernel.

A request is what the CRI asked for (RuntimeDefault, Unconfined, or Localhost with a name);
the answer is the profile name for the OCI spec's ``process.apparmorProfile``, or None for no
profile at all (unconfined). Where the kernel has no AppArmor, RuntimeDefault means nothing
and Localhost is refused: a profile that cannot be enforced must not look applied.
"""

from __future__ import annotations

import enum
import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from sandbox.apparmor.host import AppArmorError, Host, peer_label
from sandbox.apparmor.profile import RenderedProfile, render

log = logging.getLogger(__name__)

DEFAULT_PROFILE = "pycri-default"
UNCONFINED = "unconfined"
ABI_FILE = Path("/etc/apparmor.d/abi/3.0")
# What a profile name may hold here: no whitespace (the kernel's profile list separates the
# mode with a space) and no control characters (runc writes the name to /proc/self/attr/exec).
_NAME = re.compile(r"[^\s\x00-\x1f\x7f]+")


class Kind(enum.Enum):
    RUNTIME_DEFAULT = "runtime/default"
    UNCONFINED = "unconfined"
    LOCALHOST = "localhost"


@dataclass(frozen=True)
class Request:
    kind: Kind
    name: str = ""  # Localhost only


RUNTIME_DEFAULT = Request(Kind.RUNTIME_DEFAULT)


class NotSupported(AppArmorError):
    """A profile was asked for on a node whose kernel has no AppArmor."""


class NotLoaded(AppArmorError):
    """A profile that must already be in the kernel is not."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


def check_name(name: str) -> None:
    """Raises ValueError when ``name`` cannot be an AppArmor profile name."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not an AppArmor profile name (empty, or with "
                         "whitespace or control characters)")


class AppArmor:
    """The node's AppArmor, as pycri uses it.

    ``configured`` is ``[pycri.runtime] apparmor_profile``: ``pycri-default`` (pycri renders and
    loads its own), ``unconfined`` (RuntimeDefault runs without a profile), or the name of a
    profile the administrator loads.
    """

    def __init__(self, host: Host, configured: str = DEFAULT_PROFILE, *,
                 abi_file: Path = ABI_FILE) -> None:
        self._host = host
        self._configured = configured
        self._abi_file = abi_file
        self.enabled = False
        self.default: str | None = None  # the profile RuntimeDefault means; None: no profile
        self._lock = threading.Lock()

    def rendered(self) -> RenderedProfile:
        """pycri's default profile as this host needs it."""
        peer = peer_label(self._host.label())
        if peer is None:
            log.warning("pycri runs under AppArmor label %r, which cannot be named in its "
                        "default profile: signals from it to containers will be denied",
                        self._host.label())
        return render(DEFAULT_PROFILE, daemon_peers=[peer] if peer else [],
                      abi=self._abi_file.exists())

    def start(self) -> None:
        """At daemon start-up: decide what RuntimeDefault means and make sure that profile is
        in the kernel. Raises AppArmorError when it cannot be (the daemon then refuses to
        start: containers must not silently lose their confinement)."""
        self.enabled = self._host.enabled()
        if not self.enabled:
            log.info("AppArmor is not enabled in this kernel: containers run without AppArmor "
                     "profiles, and Localhost profiles are refused")
            return
        if self._configured == UNCONFINED:
            log.warning("apparmor_profile is %r: RuntimeDefault containers run without an "
                        "AppArmor profile", UNCONFINED)
            return
        if self._configured != DEFAULT_PROFILE:
            if self._configured not in self._host.loaded():
                raise NotLoaded(self._configured, f"AppArmor profile {self._configured!r} is "
                                "not loaded (load it with apparmor_parser before pycri starts)")
            self.default = self._configured
            log.info("RuntimeDefault containers run under AppArmor profile %r", self.default)
            return
        if not self._host.can_load():
            # The kernel enforces AppArmor but the tools to load profiles are missing (a
            # Debian install without the apparmor package): like CRI-O, run without the
            # default rather than not at all, and say so loudly.
            if DEFAULT_PROFILE in self._host.loaded():
                self.default = DEFAULT_PROFILE
                log.warning("apparmor_parser is not installed: using the %s already loaded, "
                            "which pycri cannot check or update", DEFAULT_PROFILE)
            else:
                log.warning("AppArmor is enabled but apparmor_parser is not installed: "
                            "RuntimeDefault containers run WITHOUT an AppArmor profile; "
                            "install the apparmor package")
            return
        profile = self.rendered()
        if profile.marker in self._host.loaded():
            log.info("AppArmor profile %s is loaded and current (%s)", profile.name,
                     profile.digest)
        else:
            self._load(profile)
        self.default = DEFAULT_PROFILE

    def _load(self, profile: RenderedProfile) -> None:
        self._host.load(profile.text)
        if profile.marker not in self._host.loaded():
            raise AppArmorError(f"apparmor_parser loaded {profile.name} but the kernel does "
                                f"not list {profile.marker}")
        log.info("loaded AppArmor profile %s (%s)", profile.name, profile.digest)

    def profile_for(self, request: Request, *, privileged: bool) -> str | None:
        """The profile for a container's process, None for none; checks that it is loaded.

        A privileged container runs unconfined unless it names a Localhost profile itself:
        the runtime's default is what privileged opts out of, and an explicit profile can only
        take rights away (containerd does the same).
        """
        if request.kind is Kind.UNCONFINED:
            return None
        if request.kind is Kind.LOCALHOST:
            if not self.enabled:
                raise NotSupported(f"AppArmor profile {request.name!r} requested but AppArmor is "
                                   "not enabled on this node")
            if request.name not in self._host.loaded():
                raise NotLoaded(request.name, f"AppArmor profile {request.name!r} is not loaded "
                                "on this node (load it with apparmor_parser first)")
            return request.name
        if privileged or self.default is None:
            return None
        return self._ensure_default(self.default)

    def _ensure_default(self, name: str) -> str:
        if name in self._host.loaded():
            return name
        # Unloaded since start-up (aa-teardown, an apparmor service reload): pycri's own can
        # be loaded again, as containerd does; an administrator's cannot.
        if name != DEFAULT_PROFILE or not self._host.can_load():
            raise NotLoaded(name, f"AppArmor profile {name!r}, the runtime default "
                            "(apparmor_profile), is no longer loaded on this node")
        with self._lock:
            if name not in self._host.loaded():
                log.warning("AppArmor profile %s was unloaded; loading it again", name)
                self._load(self.rendered())
        return name
