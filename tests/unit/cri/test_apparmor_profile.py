"""The AppArmor profile a CreateContainer asks for: the structured field against the deprecated
string (critest sends both, disagreeing), malformed requests, and the gRPC codes of the
answers, with the kernel played by FakeHost."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cri.api import api_pb2
from cri.errors import FailedPrecondition, Internal, InvalidArgument
from cri.runtime.apparmor_profile import requested, resolve
from sandbox.apparmor import RUNTIME_DEFAULT, AppArmor, AppArmorError, Kind, Request
from tests.fixtures.apparmor import FakeHost

PROFILE = api_pb2.SecurityProfile.ProfileType
UNCONFINED = Request(Kind.UNCONFINED)


def sc(**kw: Any) -> api_pb2.LinuxContainerSecurityContext:
    return api_pb2.LinuxContainerSecurityContext(**kw)


def field(kind: int, ref: str = "") -> api_pb2.SecurityProfile:
    return api_pb2.SecurityProfile(profile_type=kind, localhost_ref=ref)  # type: ignore[arg-type]


def local(name: str) -> Request:
    return Request(Kind.LOCALHOST, name)


@pytest.mark.parametrize("context,expected", [
    (sc(), RUNTIME_DEFAULT),
    (sc(apparmor_profile="runtime/default"), RUNTIME_DEFAULT),
    (sc(apparmor_profile="unconfined"), UNCONFINED),
    (sc(apparmor_profile="localhost/deny-write"), local("deny-write")),
    (sc(apparmor=field(PROFILE.RuntimeDefault)), RUNTIME_DEFAULT),
    (sc(apparmor=field(PROFILE.Unconfined)), UNCONFINED),
    (sc(apparmor=field(PROFILE.Localhost, "deny-write")), local("deny-write")),  # the kubelet
    (sc(apparmor=field(PROFILE.Localhost, "localhost/deny-write")), local("deny-write")),  # critest
    (sc(apparmor=field(PROFILE.Localhost, "/usr/bin/app")), local("/usr/bin/app")),
])
def test_requested(context: api_pb2.LinuxContainerSecurityContext, expected: Request) -> None:
    assert requested(context) == expected


@pytest.mark.parametrize("context,expected", [
    # critest "should prefer new apparmor field": the string names an unloaded profile.
    (sc(apparmor_profile="localhost/non-existent-profile",
        apparmor=field(PROFILE.Localhost, "localhost/deny-write")), local("deny-write")),
    (sc(apparmor_profile="localhost/x", apparmor=field(PROFILE.Unconfined)), UNCONFINED),
    (sc(apparmor_profile="unconfined", apparmor=field(PROFILE.RuntimeDefault)), RUNTIME_DEFAULT),
    # Set but malformed in the string: the field alone decides.
    (sc(apparmor_profile="bogus", apparmor=field(PROFILE.RuntimeDefault)), RUNTIME_DEFAULT),
])
def test_the_structured_field_wins(context: api_pb2.LinuxContainerSecurityContext,
                                   expected: Request) -> None:
    assert requested(context) == expected


@pytest.mark.parametrize("context,message", [
    (sc(apparmor_profile="deny-write"), "none of"),  # no localhost/ prefix
    (sc(apparmor_profile="docker/default"), "none of"),
    (sc(apparmor_profile="localhost/"), "needs a profile name"),
    (sc(apparmor_profile="localhost/a b"), "not an AppArmor profile name"),
    (sc(apparmor_profile="localhost/a\nb"), "not an AppArmor profile name"),
    (sc(apparmor=field(PROFILE.Localhost)), "needs a profile name"),
    (sc(apparmor=field(PROFILE.Localhost, "localhost/")), "needs a profile name"),
    (sc(apparmor=field(PROFILE.RuntimeDefault, "x")), "only for profile type Localhost"),
    (sc(apparmor=field(PROFILE.Unconfined, "x")), "only for profile type Localhost"),
    (sc(apparmor=field(7)), "unknown AppArmor profile type 7"),
])
def test_malformed_requests_are_invalid(context: api_pb2.LinuxContainerSecurityContext,
                                        message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        requested(context)


def apparmor(host: FakeHost) -> AppArmor:
    aa = AppArmor(host, abi_file=Path("/nonexistent"))
    aa.start()
    return aa


def test_resolve_names_the_unloaded_profile_with_failed_precondition() -> None:
    aa = apparmor(FakeHost())
    with pytest.raises(FailedPrecondition, match="'non-existent-profile' is not loaded"):
        resolve(aa, local("non-existent-profile"), privileged=False)


def test_resolve_refuses_localhost_without_apparmor_as_invalid() -> None:
    aa = apparmor(FakeHost(enabled=False))
    with pytest.raises(InvalidArgument, match="AppArmor is not enabled on this node"):
        resolve(aa, local("deny-write"), privileged=False)
    assert resolve(aa, RUNTIME_DEFAULT, privileged=False) is None


def test_resolve_reports_an_unreadable_kernel_list_as_internal() -> None:
    class Broken(FakeHost):
        def loaded(self) -> frozenset[str]:
            raise AppArmorError("cannot read the loaded AppArmor profiles")

    aa = AppArmor(Broken(), "unconfined")
    aa.start()
    with pytest.raises(Internal, match="cannot read"):
        resolve(aa, local("x"), privileged=False)


def test_resolve_answers_profile_names() -> None:
    aa = apparmor(FakeHost(loaded={"deny-write"}))
    assert resolve(aa, RUNTIME_DEFAULT, privileged=False) == "pycri-default"
    assert resolve(aa, RUNTIME_DEFAULT, privileged=True) is None
    assert resolve(aa, local("deny-write"), privileged=True) == "deny-write"
    assert resolve(aa, UNCONFINED, privileged=False) is None
