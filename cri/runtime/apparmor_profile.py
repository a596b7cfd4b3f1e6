"""The AppArmor profile of a container, from the CRI's two ways of asking for one.

``LinuxContainerSecurityContext.apparmor`` (a SecurityProfile) wins when it is set; otherwise
the deprecated ``apparmor_profile`` string: "" or "runtime/default", "unconfined", or
"localhost/<name>". The kubelet sends both (the same choice twice); critest also sends them
disagreeing, and the structured field must win. A Localhost name may carry the "localhost/"
prefix in the structured field too (critest sends it so; the kubelet sends the bare name).
"""

from __future__ import annotations

from cri.api import api_pb2
from cri.errors import FailedPrecondition, Internal, InvalidArgument
from sandbox.apparmor import (
    RUNTIME_DEFAULT,
    AppArmor,
    AppArmorError,
    Kind,
    NotLoaded,
    NotSupported,
    Request,
    check_name,
)

PROFILE = api_pb2.SecurityProfile.ProfileType
LOCALHOST_PREFIX = "localhost/"


def requested(sc: api_pb2.LinuxContainerSecurityContext) -> Request:
    """What the container asks for; INVALID_ARGUMENT when it is malformed (pure)."""
    if sc.HasField("apparmor"):
        p = sc.apparmor
        if p.profile_type == PROFILE.Localhost:
            return _localhost(p.localhost_ref.removeprefix(LOCALHOST_PREFIX))
        if p.profile_type not in (PROFILE.RuntimeDefault, PROFILE.Unconfined):
            raise InvalidArgument(f"unknown AppArmor profile type {p.profile_type}")
        if p.localhost_ref:
            raise InvalidArgument(f"AppArmor localhost_ref {p.localhost_ref!r} is only for "
                                  "profile type Localhost")
        return RUNTIME_DEFAULT if p.profile_type == PROFILE.RuntimeDefault \
            else Request(Kind.UNCONFINED)
    legacy = sc.apparmor_profile
    if legacy in ("", Kind.RUNTIME_DEFAULT.value):
        return RUNTIME_DEFAULT
    if legacy == Kind.UNCONFINED.value:
        return Request(Kind.UNCONFINED)
    if legacy.startswith(LOCALHOST_PREFIX):
        return _localhost(legacy.removeprefix(LOCALHOST_PREFIX))
    raise InvalidArgument(f"AppArmor profile {legacy!r} is none of \"runtime/default\", "
                          "\"unconfined\" and \"localhost/<name>\"")


def _localhost(name: str) -> Request:
    if not name:
        raise InvalidArgument("AppArmor profile type Localhost needs a profile name")
    try:
        check_name(name)
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from exc
    return Request(Kind.LOCALHOST, name)


def resolve(apparmor: AppArmor, request: Request, *, privileged: bool) -> str | None:
    """The profile name for the OCI spec (None: unconfined). Reads the kernel's profile list,
    so it belongs in a worker thread."""
    try:
        return apparmor.profile_for(request, privileged=privileged)
    except NotSupported as exc:
        raise InvalidArgument(str(exc)) from exc
    except NotLoaded as exc:
        # The request is well formed; the node is not ready for it (loading the profile
        # makes the same request succeed).
        raise FailedPrecondition(str(exc)) from exc
    except AppArmorError as exc:
        raise Internal(str(exc)) from exc
