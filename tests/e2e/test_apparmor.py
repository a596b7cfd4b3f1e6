"""AppArmor through a real daemon, as a container and the node see it.

Where the kernel enforces AppArmor (the node guest, hack/node/): every container asking for
RuntimeDefault (or nothing) runs under pycri-default, which the daemon loaded at start-up;
ExecSync runs under the container's profile; Unconfined and privileged containers run
unconfined; a Localhost profile loaded here with apparmor_parser is enforced; an unloaded one
fails CreateContainer naming it. Where the kernel has none (this project's CI host), Localhost
profiles are refused and RuntimeDefault means no profile, as before AppArmor support.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from cri.api import api_pb2
from sandbox.apparmor import AppArmor, SystemHost
from sandbox.apparmor.host import find_parser
from tests.e2e.containers import (
    Pod,
    container_pid,
    create_refused,
    exec_ok,
    privileged_pod_config,
    profile,
    remove_pod,
    sc,
    start_pod,
    with_caps,
)
from tests.e2e.helpers import Daemon

pytestmark = pytest.mark.e2e
SC = api_pb2.LinuxContainerSecurityContext
PROFILE = api_pb2.SecurityProfile.ProfileType
SLEEP = ["sleep", "1000"]
PROFILES = Path("/sys/kernel/security/apparmor/profiles")

ENABLED = SystemHost().enabled()
PARSER = find_parser()
needs_apparmor = pytest.mark.skipif(
    not ENABLED, reason="the kernel does not enforce AppArmor (/sys/module/apparmor/parameters/"
                        "enabled is not Y): these run in the node guest (hack/node/)")
needs_parser = pytest.mark.skipif(
    PARSER is None, reason="apparmor_parser is not installed (Debian package apparmor)")
without_apparmor = pytest.mark.skipif(ENABLED, reason="the kernel enforces AppArmor here")

DENY_WRITE = "pycri-e2e-deny-tmp-write"
# A Localhost profile as a user writes one: everything allowed but writes below /tmp.
DENY_WRITE_TEXT = f"""\
abi <abi/3.0>,
profile {DENY_WRITE} flags=(attach_disconnected,mediate_deleted) {{
  file,
  network,
  unix,
  capability,
  signal,
  ptrace,
  deny /tmp/** w,
}}
"""
MISSING = "pycri-e2e-non-existent-profile"


def label(pod: Pod, ctr_id: str, pid: str = "self") -> str:
    """The AppArmor label of a process in the container, as the container reads it."""
    return exec_ok(pod, ctr_id, ["cat", f"/proc/{pid}/attr/current"]).strip("\x00\n")


def host_label(pid: int) -> str:
    return Path(f"/proc/{pid}/attr/current").read_text().strip("\x00\n")


def infra_pid(pod: Pod) -> int:
    st = pod.rt.PodSandboxStatus(api_pb2.PodSandboxStatusRequest(pod_sandbox_id=pod.id,
                                                                 verbose=True), timeout=10)
    return int(json.loads(st.info["info"])["pid"])


def finished(pod: Pod, name: str, script: str, context: SC) -> tuple[int, str]:
    """Run ``sh -c script`` to its end; its exit code and log."""
    ctr = pod.run(name, ["sh", "-c", script], security=context)
    return pod.wait_exit(ctr).exit_code, pod.log(ctr)


# --- a kernel without AppArmor ---------------------------------------------------------------


@without_apparmor
def test_localhost_profiles_are_refused_without_apparmor(pod: Pod) -> None:
    for name, context in {
        "field": sc(apparmor=profile(PROFILE.Localhost, "some-profile")),
        "string": sc(apparmor_profile="localhost/some-profile"),
    }.items():
        err = create_refused(pod, pod.container_config(name, SLEEP, security=context))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (name, err.details())
        assert "'some-profile'" in (err.details() or "") and "not enabled" in (err.details() or "")
    ctr = pod.run("default", ["true"], security=sc(apparmor=profile(PROFILE.RuntimeDefault)))
    assert pod.wait_exit(ctr).exit_code == 0


def test_malformed_apparmor_requests_are_invalid(pod: Pod) -> None:
    for name, context in {
        "no-prefix": sc(apparmor_profile="some-profile"),
        "no-name": sc(apparmor=profile(PROFILE.Localhost)),
        "ref-without-localhost": sc(apparmor=profile(PROFILE.Unconfined, "x")),
    }.items():
        err = create_refused(pod, pod.container_config(name, SLEEP, security=context))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (name, err.details())


# --- a kernel with AppArmor (the node guest) --------------------------------------------------


@pytest.fixture(scope="module")
def deny_write() -> Iterator[str]:
    """DENY_WRITE loaded in the kernel for the module's tests, removed after them."""
    assert PARSER is not None
    subprocess.run([str(PARSER), "-r", "-K"], input=DENY_WRITE_TEXT.encode(), check=True)
    try:
        yield DENY_WRITE
    finally:
        subprocess.run([str(PARSER), "-R", "-K"], input=DENY_WRITE_TEXT.encode(), check=True)


@needs_apparmor
@pytest.mark.node
def test_daemon_loaded_its_default_profile_with_its_marker(daemon: Daemon) -> None:
    loaded = PROFILES.read_text().splitlines()
    assert "pycri-default (enforce)" in loaded
    # The text in the kernel is the one this checkout renders (the daemon, like this test,
    # runs unconfined): its marker, and no other.
    marker = AppArmor(SystemHost()).rendered().marker
    assert [line for line in loaded if line.startswith("pycri-default//")] == [
        f"{marker} (enforce)"]
    assert "AppArmor profile pycri-default" in daemon.log.read_text()


@needs_apparmor
@pytest.mark.node
@pytest.mark.parametrize("context", [
    sc(),  # nothing asked: the kubelet's default
    sc(apparmor=profile(PROFILE.RuntimeDefault)),
    sc(apparmor_profile="runtime/default"),
], ids=["unset", "field", "string"])
def test_runtime_default_is_pycri_default(pod: Pod, context: SC) -> None:
    ctr = pod.run("default", SLEEP, security=context)
    assert label(pod, ctr) == "pycri-default (enforce)"  # ExecSync's own process
    assert label(pod, ctr, "1") == "pycri-default (enforce)"  # the container's main process
    assert host_label(container_pid(pod, ctr)) == "pycri-default (enforce)"


@needs_apparmor
@pytest.mark.node
def test_infra_runs_under_the_default_too(pod: Pod) -> None:
    assert host_label(infra_pid(pod)) == "pycri-default (enforce)"


@needs_apparmor
@pytest.mark.node
def test_unconfined_and_privileged_run_unconfined(pod: Pod, daemon: Daemon, tmp_path: Path
                                                  ) -> None:
    free = pod.run("free", SLEEP, security=sc(apparmor=profile(PROFILE.Unconfined)))
    assert label(pod, free) == "unconfined"
    legacy = pod.run("legacy", SLEEP, security=sc(apparmor_profile="unconfined"))
    assert label(pod, legacy) == "unconfined"
    priv = start_pod(daemon, tmp_path / "priv", privileged_pod_config())
    try:
        ctr = priv.run("priv", SLEEP, security=sc(privileged=True))
        assert label(priv, ctr) == "unconfined"
        assert host_label(infra_pid(priv)) == "unconfined"
    finally:
        remove_pod(priv)


@needs_apparmor
@pytest.mark.node
def test_default_profile_denies_mount_and_umount_even_with_sys_admin(pod: Pod) -> None:
    """CAP_SYS_ADMIN lets a process mount and unmount; only the profile stops it. The same
    commands unconfined are the control: they succeed."""
    free = pod.run("free", SLEEP, security=with_caps(["SYS_ADMIN"],
                                                     apparmor=profile(PROFILE.Unconfined)))
    exec_ok(pod, free, ["mount", "-t", "tmpfs", "none", "/tmp"])
    exec_ok(pod, free, ["umount", "/proc/kcore"])  # uncovers a masked path
    confined = pod.run("confined", SLEEP, security=with_caps(["SYS_ADMIN"]))
    assert label(pod, confined) == "pycri-default (enforce)"
    for cmd in (["mount", "-t", "tmpfs", "none", "/tmp"], ["umount", "/proc/kcore"]):
        res = pod.exec(confined, cmd)
        assert res.exit_code != 0 and b"Permission denied" in res.stderr, (cmd, res)
    # Writes to the node's kernel knobs are refused too (also read-only mounts: EROFS or EACCES).
    res = pod.exec(confined, ["sh", "-c", "echo h > /proc/sysrq-trigger"])
    assert res.exit_code != 0, res


@needs_apparmor
@needs_parser
@pytest.mark.node
@pytest.mark.parametrize("context", [
    sc(apparmor=profile(PROFILE.Localhost, DENY_WRITE)),  # the kubelet's form
    sc(apparmor=profile(PROFILE.Localhost, f"localhost/{DENY_WRITE}")),  # critest's
    sc(apparmor_profile=f"localhost/{DENY_WRITE}"),
    # Both set, disagreeing: the structured field wins over an unloaded name in the string.
    sc(apparmor_profile=f"localhost/{MISSING}", apparmor=profile(PROFILE.Localhost, DENY_WRITE)),
], ids=["field", "field-prefixed", "string", "both"])
def test_localhost_profile_blocks_writes(pod: Pod, deny_write: str, context: SC) -> None:
    code, log = finished(pod, "touch", "touch /tmp/foo", context)
    assert code != 0 and "Permission denied" in log, (code, log)
    code, log = finished(pod, "control", "touch /tmp/foo", sc())
    assert code == 0, log


@needs_apparmor
@needs_parser
@pytest.mark.node
def test_exec_sync_runs_under_the_containers_profile(pod: Pod, deny_write: str) -> None:
    ctr = pod.run("sleeper", SLEEP, security=sc(apparmor=profile(PROFILE.Localhost, deny_write)))
    assert label(pod, ctr) == f"{deny_write} (enforce)"
    res = pod.exec(ctr, ["touch", "/tmp/bar"])
    assert res.exit_code != 0 and b"Permission denied" in res.stderr, res
    exec_ok(pod, ctr, ["touch", "/dev/shm/bar"])  # only /tmp is denied


@needs_apparmor
@pytest.mark.node
def test_unloaded_localhost_profile_fails_create_naming_it(pod: Pod) -> None:
    for name, context in {
        "field": sc(apparmor=profile(PROFILE.Localhost, MISSING)),
        "string": sc(apparmor_profile=f"localhost/{MISSING}"),
        "both": sc(apparmor_profile=f"localhost/{MISSING}",
                   apparmor=profile(PROFILE.Localhost, f"localhost/{MISSING}")),
    }.items():
        err = create_refused(pod, pod.container_config(name, SLEEP, security=context))
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, (name, err.details())
        assert MISSING in (err.details() or ""), (name, err.details())


@needs_apparmor
@needs_parser
@pytest.mark.node
def test_default_profile_unloaded_under_the_daemon_is_loaded_again(pod: Pod) -> None:
    """Last in the module: it takes pycri-default out of the kernel (aa-teardown would)."""
    assert PARSER is not None
    Path("/sys/kernel/security/apparmor/.remove").write_text("pycri-default")
    assert "pycri-default (enforce)" not in PROFILES.read_text().splitlines()
    ctr = pod.run("again", SLEEP)
    assert label(pod, ctr) == "pycri-default (enforce)"
    assert "pycri-default (enforce)" in PROFILES.read_text().splitlines()
