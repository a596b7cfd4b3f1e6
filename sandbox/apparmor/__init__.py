"""AppArmor for containers: pycri's default profile, the profile each container runs under,
and the host seam (kernel state, apparmor_parser) both are decided through."""

from sandbox.apparmor.host import AppArmorError, Host, SystemHost
from sandbox.apparmor.policy import (
    DEFAULT_PROFILE,
    RUNTIME_DEFAULT,
    UNCONFINED,
    AppArmor,
    Kind,
    NotLoaded,
    NotSupported,
    Request,
    check_name,
)

__all__ = [
    "DEFAULT_PROFILE",
    "RUNTIME_DEFAULT",
    "UNCONFINED",
    "AppArmor",
    "AppArmorError",
    "Host",
    "Kind",
    "NotLoaded",
    "NotSupported",
    "Request",
    "SystemHost",
    "check_name",
]
