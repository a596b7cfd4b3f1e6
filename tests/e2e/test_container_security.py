"""Container security options through a real daemon, as the process inside the container sees
them: capabilities, privileged mode, seccomp, the user and groups, no_new_privs, a read-only
rootfs, masked and read-only paths, the working dir, the environment and the pid namespace
modes. Every check runs in the container (ExecSync uses the container's own process settings,
and /proc/1 is its main process) or reads what CreateContainer answered."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from cri.api import api_pb2
from tests.e2e.containers import (
    Pod,
    create_refused,
    exec_ok,
    privileged_pod_config,
    proc_status,
    profile,
    pull,
    push_configured_image,
    remove_pod,
    sc,
    start_pod,
    with_caps,
)
from tests.e2e.helpers import Daemon
from tests.fixtures.images import runnable_busybox_layers, tar_layer
from tests.fixtures.registry import LocalRegistry

pytestmark = pytest.mark.e2e
SC = api_pb2.LinuxContainerSecurityContext
NS = api_pb2.NamespaceMode
PROFILE = api_pb2.SecurityProfile.ProfileType
INVALID = grpc.StatusCode.INVALID_ARGUMENT

# Kernel capability numbers (linux/capability.h) of CRI-O's nine defaults.
DEFAULT_CAP_BITS = {"CHOWN": 0, "DAC_OVERRIDE": 1, "FOWNER": 3, "FSETID": 4, "KILL": 5,
                    "SETGID": 6, "SETUID": 7, "SETPCAP": 8, "NET_BIND_SERVICE": 10}
DEFAULT_CAPS = sum(1 << bit for bit in DEFAULT_CAP_BITS.values())
NET_ADMIN_BIT = 12
NET_RAW_BIT = 13
SLEEP = ["sleep", "1000"]


@pytest.fixture
def priv_pod(daemon: Daemon, image: str, tmp_path: Path) -> Iterator[Pod]:
    pod = start_pod(daemon, tmp_path, privileged_pod_config())
    try:
        yield pod
    finally:
        remove_pod(pod)


def caps(status: dict[str, str], field: str) -> int:
    return int(status[field], 16)


def daemon_bounding_set(daemon: Daemon) -> int:
    assert daemon.proc is not None
    for line in Path(f"/proc/{daemon.proc.pid}/status").read_text().splitlines():
        if line.startswith("CapBnd:"):
            return int(line.split()[1], 16)
    raise AssertionError("daemon has no CapBnd")


def run(pod: Pod, name: str, command: list[str] | None = None, **kw: object) -> str:
    kw.setdefault("security", sc())
    return pod.run(name, command or SLEEP, **kw)


# Localhost profiles in the docker format critest writes too.
BLOCK_CHMOD = {"defaultAction": "SCMP_ACT_ALLOW",
               "syscalls": [{"names": ["chmod", "fchmod", "fchmodat"], "action": "SCMP_ACT_ERRNO"}]}
BLOCK_HOSTNAME = {"defaultAction": "SCMP_ACT_ALLOW",
                  "syscalls": [{"names": ["sethostname"], "action": "SCMP_ACT_ERRNO"}]}


# --- capabilities ---------------------------------------------------------------------------


def test_default_capabilities_are_crio_defaults(pod: Pod) -> None:
    ctr = run(pod, "defaults")
    for pid in ("self", "1"):  # an exec'd process and the container's main process
        st = proc_status(pod, ctr, pid)
        for field in ("CapEff", "CapPrm", "CapBnd"):
            assert caps(st, field) == DEFAULT_CAPS, (pid, field, st[field])
        # Never inheritable or ambient (CVE-2022-27652).
        assert caps(st, "CapInh") == 0 and caps(st, "CapAmb") == 0


def test_add_net_admin_allows_link_changes(pod: Pod) -> None:
    plain = run(pod, "plain")
    res = pod.exec(plain, ["ip", "link", "add", "e2eplain", "type", "bridge"])
    assert res.exit_code != 0 and b"Operation not permitted" in res.stderr, res
    admin = run(pod, "admin", security=with_caps(add=["NET_ADMIN"]))
    st = proc_status(pod, admin)
    assert caps(st, "CapEff") == DEFAULT_CAPS | 1 << NET_ADMIN_BIT
    assert caps(st, "CapInh") == 0
    exec_ok(pod, admin, ["ip", "link", "add", "e2eadmin", "type", "bridge"])
    assert "e2eadmin" in exec_ok(pod, admin, ["ip", "-o", "link", "show"])


def test_drop_chown_makes_chown_fail(pod: Pod) -> None:
    script = "touch /tmp/f && chown 1234 /tmp/f && stat -c %u /tmp/f"
    plain = run(pod, "plain")
    assert exec_ok(pod, plain, ["sh", "-c", script]).strip() == "1234"
    nochown = run(pod, "nochown", security=with_caps(drop=["CHOWN"]))
    assert caps(proc_status(pod, nochown), "CapEff") == DEFAULT_CAPS & ~1
    res = pod.exec(nochown, ["sh", "-c", script])
    assert res.exit_code != 0 and b"Operation not permitted" in res.stderr, res


def test_drop_all_leaves_no_capability(pod: Pod) -> None:
    ctr = run(pod, "none", security=with_caps(drop=["ALL"]))
    for pid in ("self", "1"):
        st = proc_status(pod, ctr, pid)
        for field in ("CapEff", "CapPrm", "CapBnd", "CapInh", "CapAmb"):
            assert caps(st, field) == 0, (pid, field, st[field])


def test_add_all_grants_the_daemons_bounding_set(pod: Pod, daemon: Daemon) -> None:
    ceiling = daemon_bounding_set(daemon)
    ctr = run(pod, "all", security=with_caps(add=["ALL"], drop=["NET_RAW"]))
    st = proc_status(pod, ctr)
    # An explicit drop wins over ALL.
    assert caps(st, "CapEff") == caps(st, "CapBnd") == ceiling & ~(1 << NET_RAW_BIT)
    assert caps(st, "CapInh") == 0
    everything = run(pod, "everything", security=with_caps(add=["ALL"]))
    assert caps(proc_status(pod, everything), "CapEff") == ceiling


def test_unknown_capability_is_refused(pod: Pod) -> None:
    err = create_refused(pod, pod.container_config("bad", SLEEP,
                                                   security=with_caps(add=["NOT_A_CAP"])))
    assert err.code() == INVALID, err.details()


# --- privileged -----------------------------------------------------------------------------


def masked_files() -> list[str]:
    """Files every unprivileged container gets masked that this kernel has (which of them
    exist depends on its config: this VM's has no /proc/kcore)."""
    found = [p for p in ("/proc/timer_list", "/proc/interrupts", "/proc/sched_debug",
                         "/proc/kcore", "/proc/keys") if Path(p).is_file()]
    assert found, "no maskable /proc file on this kernel"
    return found


def sh(pod: Pod, ctr: str, script: str) -> str:
    return exec_ok(pod, ctr, ["sh", "-c", script]).strip()


def test_privileged_container(priv_pod: Pod, daemon: Daemon, tmp_path: Path) -> None:
    pod = priv_pod
    # Seccomp does not apply to a privileged container, not even a Localhost profile that
    # blocks sethostname (critest expects the same).
    block = tmp_path / "block-hostname.json"
    block.write_text(json.dumps(BLOCK_HOSTNAME))
    priv = run(pod, "priv", security=sc(privileged=True,
                                        seccomp=profile(PROFILE.Localhost, str(block))))
    plain = run(pod, "plain", security=sc(seccomp=profile(PROFILE.RuntimeDefault)))
    st = proc_status(pod, priv)
    assert caps(st, "CapEff") == caps(st, "CapBnd") == daemon_bounding_set(daemon)
    assert caps(st, "CapInh") == 0
    assert st["Seccomp"] == "0"
    assert proc_status(pod, plain)["Seccomp"] == "2"
    exec_ok(pod, priv, ["hostname", "e2e-priv"])
    # Host devices: only the privileged container has them.
    for dev in ("/dev/kmsg", "/dev/loop0"):
        if Path(dev).exists():
            assert sh(pod, priv, f"test -e {dev} && echo yes || echo no") == "yes", dev
            assert sh(pod, plain, f"test -e {dev} && echo yes || echo no") == "no", dev
    # Nothing is masked or read-only under /proc.
    probe = masked_files()[0]
    assert sh(pod, priv, f"stat -c %F {probe}") == "regular empty file"  # proc files say size 0
    assert sh(pod, priv, f"head -c 1 {probe} | wc -c") == "1"
    assert sh(pod, plain, f"stat -c %F {probe}") == "character special file"
    assert sh(pod, priv, "grep -c ' /proc/sys ' /proc/mounts || true") == "0"
    assert sh(pod, plain, "grep -c ' /proc/sys ' /proc/mounts || true") == "1"


def sysfs_options(pod: Pod, ctr: str) -> list[str]:
    return sh(pod, ctr, "grep ' /sys sysfs ' /proc/mounts").split()[3].split(",")


def test_privileged_container_has_writable_sysfs(priv_pod: Pod) -> None:
    plain = run(priv_pod, "plain")
    assert "ro" in sysfs_options(priv_pod, plain)
    priv = run(priv_pod, "priv", security=sc(privileged=True))
    assert "rw" in sysfs_options(priv_pod, priv)


def test_privileged_container_needs_privileged_pod(pod: Pod) -> None:
    err = create_refused(pod, pod.container_config("priv", SLEEP, security=sc(privileged=True)))
    assert err.code() == INVALID, err.details()


# --- seccomp --------------------------------------------------------------------------------


@pytest.mark.parametrize(("context", "mode"), [
    (sc(seccomp=profile(PROFILE.RuntimeDefault)), "2"),
    (sc(seccomp_profile_path="runtime/default"), "2"),  # the deprecated string form
    (sc(seccomp=profile(PROFILE.Unconfined)), "0"),
    (sc(), "0"),  # nil profile: unconfined, as the CRI defines it
], ids=["runtime-default", "legacy-runtime-default", "unconfined", "nil"])
def test_seccomp_mode(pod: Pod, context: SC, mode: str) -> None:
    ctr = run(pod, "sc", security=context)
    assert proc_status(pod, ctr)["Seccomp"] == mode
    assert proc_status(pod, ctr, "1")["Seccomp"] == mode
    # unshare(CLONE_NEWUSER) needs no capability, so only the filter can refuse it: the
    # RuntimeDefault profile allows unshare to CAP_SYS_ADMIN holders only.
    res = pod.exec(ctr, ["unshare", "-U", "true"])
    if mode == "2":
        assert res.exit_code != 0 and b"Operation not permitted" in res.stderr, res
    else:
        assert res.exit_code == 0, res


def test_runtime_default_rules_follow_the_containers_capabilities(pod: Pod) -> None:
    """The RuntimeDefault document grants sethostname, mount, unshare... to CAP_SYS_ADMIN
    holders (as moby's, CRI-O's and containerd's do): the rule is resolved per container."""
    admin = run(pod, "admin", security=with_caps(
        add=["SYS_ADMIN"], seccomp=profile(PROFILE.RuntimeDefault)))
    assert proc_status(pod, admin)["Seccomp"] == "2"
    exec_ok(pod, admin, ["unshare", "-U", "true"])
    exec_ok(pod, admin, ["hostname", "e2e-renamed"])
    assert exec_ok(pod, admin, ["hostname"]).strip() == "e2e-renamed"


def test_localhost_profile_blocks_chmod(pod: Pod, tmp_path: Path) -> None:
    path = tmp_path / "block-chmod.json"
    path.write_text(json.dumps(BLOCK_CHMOD))
    plain = run(pod, "plain")
    exec_ok(pod, plain, ["chmod", "400", "/tmp/.keep"])
    ctr = run(pod, "local", security=sc(seccomp=profile(PROFILE.Localhost, str(path))))
    assert proc_status(pod, ctr)["Seccomp"] == "2"
    res = pod.exec(ctr, ["chmod", "400", "/"])
    assert res.exit_code != 0 and b"Operation not permitted" in res.stderr, res
    legacy = run(pod, "legacy", security=sc(seccomp_profile_path=f"localhost/{path}"))
    res = pod.exec(legacy, ["chmod", "400", "/tmp/.keep"])
    assert res.exit_code != 0 and b"Operation not permitted" in res.stderr, res


def test_localhost_profile_blocks_sethostname_despite_sys_admin(pod: Pod, tmp_path: Path) -> None:
    path = tmp_path / "block-hostname.json"
    path.write_text(json.dumps(BLOCK_HOSTNAME))
    free = run(pod, "free", security=with_caps(add=["SYS_ADMIN"],
                                                     seccomp=profile(PROFILE.Unconfined)))
    exec_ok(pod, free, ["hostname", "e2e-allowed"])
    blocked = run(pod, "blocked", security=with_caps(
        add=["SYS_ADMIN"], seccomp=profile(PROFILE.Localhost, str(path))))
    res = pod.exec(blocked, ["hostname", "e2e-blocked"])
    assert res.exit_code != 0 and b"Operation not permitted" in res.stderr, res
    assert exec_ok(pod, blocked, ["hostname"]).strip() == "e2e-allowed"


def test_bad_localhost_profiles_are_refused(pod: Pod, tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [')
    cases = {
        "missing": sc(seccomp=profile(PROFILE.Localhost, str(tmp_path / "nope.json"))),
        "legacy-missing": sc(seccomp_profile_path=f"localhost/{tmp_path / 'nope.json'}"),
        "broken": sc(seccomp=profile(PROFILE.Localhost, str(broken))),
    }
    for name, context in cases.items():
        err = create_refused(pod, pod.container_config(name, SLEEP, security=context))
        assert err.code() == INVALID, (name, err.details())
    # The refused names are free again.
    ctr = run(pod, "missing", ["true"])
    assert pod.wait_exit(ctr).exit_code == 0


# --- users and groups -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def www_image(daemon: Daemon, registry: LocalRegistry, image: str) -> str:
    name = push_configured_image(registry, "www", runnable_busybox_layers(), {"User": "www-data"})
    pull(daemon, name)
    return name


def ids(pod: Pod, ctr: str) -> tuple[int, int, list[int]]:
    uid = int(exec_ok(pod, ctr, ["id", "-u"]))
    gid = int(exec_ok(pod, ctr, ["id", "-g"]))
    groups = [int(g) for g in exec_ok(pod, ctr, ["id", "-G"]).split()]
    return uid, gid, groups


def test_image_user_is_honoured(pod: Pod, www_image: str) -> None:
    ctr = run(pod, "www", image=api_pb2.ImageSpec(image=www_image))
    uid, gid, groups = ids(pod, ctr)
    # www-data is 33:33 in the image's passwd and a member of "extra" (1234) in its group file.
    assert (uid, gid, sorted(groups)) == (33, 33, [33, 1234])
    assert exec_ok(pod, ctr, ["sh", "-c", "stat -c %u /proc/1"]).strip() == "33"
    user = pod.status(ctr).status.user.linux
    assert (user.uid, user.gid, sorted(user.supplemental_groups)) == (33, 33, [33, 1234])
    # A CRI user replaces the image's, and 0 is a real value (root), not "unset".
    root = run(pod, "root", image=api_pb2.ImageSpec(image=www_image),
                   security=sc(run_as_user=api_pb2.Int64Value(value=0)))
    assert ids(pod, root)[:2] == (0, 0)


def test_run_as_user_and_group(pod: Pod) -> None:
    ctr = run(pod, "u", security=sc(run_as_user=api_pb2.Int64Value(value=1234)))
    assert ids(pod, ctr)[:2] == (1234, 0)
    assert caps(proc_status(pod, ctr), "CapEff") == 0  # not root: no effective capabilities
    grp = run(pod, "ug", security=sc(run_as_user=api_pb2.Int64Value(value=1234),
                                           run_as_group=api_pb2.Int64Value(value=5678)))
    assert ids(pod, grp)[:2] == (1234, 5678)


def test_run_as_username(pod: Pod) -> None:
    ctr = run(pod, "named", security=sc(run_as_username="www-data"))
    assert ids(pod, ctr)[:2] == (33, 33)
    assert exec_ok(pod, ctr, ["id", "-un"]).strip() == "www-data"


def test_run_as_group_without_user_is_refused(pod: Pod) -> None:
    cfg = pod.container_config("g", SLEEP, security=sc(run_as_group=api_pb2.Int64Value(value=5)))
    err = create_refused(pod, cfg)
    assert err.code() == INVALID, err.details()


def test_a_container_user_namespace_is_refused(pod: Pod) -> None:
    cfg = pod.container_config("u", SLEEP)
    cfg.linux.security_context.namespace_options.userns_options.mode = api_pb2.NamespaceMode.POD
    err = create_refused(pod, cfg)
    assert err.code() == grpc.StatusCode.UNIMPLEMENTED, err.details()


def test_supplemental_groups_merge_and_strict(pod: Pod) -> None:
    P = api_pb2.SupplementalGroupsPolicy
    merge = run(pod, "merge", security=sc(run_as_username="www-data",
                                                supplemental_groups=[5000]))
    strict = run(pod, "strict", security=sc(run_as_username="www-data",
                                                  supplemental_groups=[5000],
                                                  supplemental_groups_policy=P.Strict))
    # Merge keeps the groups the image's /etc/group lists the user in; Strict only the CRI's.
    assert sorted(ids(pod, merge)[2]) == [33, 1234, 5000]
    assert sorted(ids(pod, strict)[2]) == [33, 5000]
    assert sorted(pod.status(strict).status.user.linux.supplemental_groups) == [33, 5000]


def test_passwd_symlink_never_reads_the_host(pod: Pod, daemon: Daemon,
                                             registry: LocalRegistry) -> None:
    """An image whose /etc/passwd is an absolute symlink: it resolves inside the rootfs
    (CVE-2024-5154, CVE-2024-9676). The same path holds a different file on the host, with a
    user only the host file has."""
    rel = f"tmp/{daemon.base.name}-passwd"
    host_file = Path("/") / rel
    host_file.write_text("hostonly:x:4242:4242::/:/bin/sh\n")
    try:
        base = runnable_busybox_layers()[0]
        etc = tar_layer({"etc/passwd": f"/{rel}",
                         rel: b"root:x:0:0::/root:/bin/sh\ninsider:x:4321:4321::/:/bin/sh\n",
                         "etc/group": b"root:x:0:\n"})
        name = push_configured_image(registry, "passwd-link", [base, etc], {})
        pull(daemon, name)
        spec = api_pb2.ImageSpec(image=name)
        err = create_refused(pod, pod.container_config(
            "host", SLEEP, image=spec, security=sc(run_as_username="hostonly")))
        assert err.code() == INVALID and "not found" in (err.details() or ""), err.details()
        ctr = run(pod, "inside", image=spec, security=sc(run_as_username="insider"))
        assert ids(pod, ctr)[:2] == (4321, 4321)
    finally:
        host_file.unlink()


def test_image_user_above_uint32_is_refused(pod: Pod, daemon: Daemon,
                                            registry: LocalRegistry) -> None:
    """2^32 would truncate to uid 0 (CVE-2024-40635): an error, never root."""
    name = push_configured_image(registry, "bigid", runnable_busybox_layers(),
                                 {"User": "4294967296"})
    pull(daemon, name)
    err = create_refused(pod, pod.container_config("big", SLEEP,
                                                   image=api_pb2.ImageSpec(image=name)))
    assert err.code() == INVALID, err.details()


# --- process settings -----------------------------------------------------------------------


def test_no_new_privs(pod: Pod) -> None:
    on = run(pod, "nnp", security=sc(no_new_privs=True))
    off = run(pod, "plain")
    assert proc_status(pod, on)["NoNewPrivs"] == "1"
    assert proc_status(pod, on, "1")["NoNewPrivs"] == "1"
    assert proc_status(pod, off)["NoNewPrivs"] == "0"


def test_readonly_rootfs(pod: Pod, tmp_path: Path) -> None:
    vol = tmp_path / "vol"
    vol.mkdir()
    ro = run(pod, "ro", security=sc(readonly_rootfs=True),
                 mounts=[api_pb2.Mount(host_path=str(vol), container_path="/data")])
    for path in ("/x", "/tmp/x", "/etc/hostname"):
        res = pod.exec(ro, ["touch", path])
        assert res.exit_code != 0 and b"Read-only file system" in res.stderr, (path, res)
    # Volumes and /dev/shm stay writable.
    exec_ok(pod, ro, ["sh", "-c", "echo from-ctr > /data/out && touch /dev/shm/x"])
    assert (vol / "out").read_text() == "from-ctr\n"
    rw = run(pod, "rw")
    exec_ok(pod, rw, ["touch", "/x", "/tmp/x"])


def test_masked_paths(pod: Pod) -> None:
    plain = run(pod, "plain")
    extra = run(pod, "extra", security=sc(masked_paths=["/etc/group"]))
    for ctr in (plain, extra):
        for path in masked_files():
            out = exec_ok(pod, ctr, ["sh", "-c", f"stat -c %F {path}; wc -c < {path}"])
            assert out.split("\n")[:2] == ["character special file", "0"], (path, out)
    # The CRI's masked paths come on top of the defaults.
    assert exec_ok(pod, extra, ["cat", "/etc/group"]) == ""
    assert "www-data" in exec_ok(pod, plain, ["cat", "/etc/group"])


def test_readonly_paths(pod: Pod) -> None:
    plain = run(pod, "plain")
    extra = run(pod, "extra", security=sc(readonly_paths=["/tmp"]))
    for ctr in (plain, extra):
        # /proc/sys is read-only even for root with the default capabilities.
        res = pod.exec(ctr, ["sh", "-c", "echo e2e > /proc/sys/kernel/domainname"])
        assert res.exit_code != 0 and b"Read-only file system" in res.stderr, res
    res = pod.exec(extra, ["touch", "/tmp/t"])
    assert res.exit_code != 0 and b"Read-only file system" in res.stderr, res
    exec_ok(pod, plain, ["touch", "/tmp/t"])


@pytest.fixture(scope="module")
def env_image(daemon: Daemon, registry: LocalRegistry, image: str) -> str:
    name = push_configured_image(registry, "env", runnable_busybox_layers(), {
        "Env": ["PATH=/bin", "FROM_IMAGE=image", "BOTH=image", "SPACED=a b"],
        "WorkingDir": "/image/work/dir",
    })
    pull(daemon, name)
    return name


def test_working_dir_is_created(pod: Pod, env_image: str) -> None:
    cri = run(pod, "cri", working_dir="/srv/app/data")
    assert exec_ok(pod, cri, ["pwd"]).strip() == "/srv/app/data"
    assert exec_ok(pod, cri, ["readlink", "/proc/1/cwd"]).strip() == "/srv/app/data"
    img = run(pod, "img", image=api_pb2.ImageSpec(image=env_image))
    assert exec_ok(pod, img, ["pwd"]).strip() == "/image/work/dir"
    both = run(pod, "both", image=api_pb2.ImageSpec(image=env_image), working_dir="/cri")
    assert exec_ok(pod, both, ["pwd"]).strip() == "/cri"


def test_env_image_then_cri(pod: Pod, env_image: str) -> None:
    envs = [api_pb2.KeyValue(key="BOTH", value=b"cri"), api_pb2.KeyValue(key="FROM_CRI", value=b"x=y")]
    ctr = run(pod, "env", image=api_pb2.ImageSpec(image=env_image), envs=envs)
    env = dict(line.split("=", 1) for line in exec_ok(pod, ctr, ["env"]).splitlines())
    assert env["FROM_IMAGE"] == "image" and env["SPACED"] == "a b"
    assert env["BOTH"] == "cri" and env["FROM_CRI"] == "x=y"
    assert env["PATH"] == "/bin"
    assert env["HOME"] == "/root"  # root's home in the image's passwd
    assert env["HOSTNAME"] == pod.config.hostname
    # The main process got the same environment.
    main = exec_ok(pod, ctr, ["cat", "/proc/1/environ"]).split("\0")
    assert "BOTH=cri" in main and "FROM_IMAGE=image" in main


# --- pid namespace modes --------------------------------------------------------------------


def processes(pod: Pod, ctr: str) -> dict[int, str]:
    """pid -> command line of every process the container can see."""
    # A host process's argv may hold newlines (PID NODE sees them all): flatten those too, and
    # skip processes that exit while the loop runs.
    script = (
        'for p in /proc/[0-9]*; do c=$(tr "\\0\\n" "  " 2>/dev/null < $p/cmdline) '
        '&& echo "${p#/proc/} $c"; done'
    )
    out = exec_ok(pod, ctr, ["sh", "-c", script])
    procs = {}
    for line in out.splitlines():
        pid, _, cmd = line.partition(" ")
        procs[int(pid)] = cmd.strip()
    return procs


def pid_mode(mode: int, target: str = "") -> SC:
    return sc(namespace_options=api_pb2.NamespaceOption(pid=mode, target_id=target))  # type: ignore[arg-type]


def test_pid_namespace_container(pod: Pod) -> None:
    ctr = run(pod, "own", ["sleep", "1001"], security=pid_mode(NS.CONTAINER))
    procs = processes(pod, ctr)
    assert procs[1] == "sleep 1001"
    assert not any(cmd.startswith("/pause") for cmd in procs.values()), procs


def test_pid_namespace_pod(pod: Pod) -> None:
    a = run(pod, "a", ["sleep", "1001"], security=pid_mode(NS.POD))
    b = run(pod, "b", ["sleep", "1002"], security=pid_mode(NS.POD))
    procs = processes(pod, b)
    assert procs[1].startswith("/pause"), procs
    assert {"sleep 1001", "sleep 1002"} <= set(procs.values()), procs
    assert processes(pod, a)[1].startswith("/pause")


def test_pid_namespace_node(pod: Pod) -> None:
    ctr = run(pod, "host", ["sleep", "1001"], security=pid_mode(NS.NODE))
    procs = processes(pod, ctr)
    me = Path(f"/proc/{os.getpid()}/cmdline").read_bytes().translate(bytes.maketrans(b"\0\n", b"  "))
    me_text = me.decode().strip()
    assert procs.get(os.getpid()) == me_text
    assert not procs[1].startswith(("sleep", "/pause")), procs[1]


def test_pid_namespace_target(pod: Pod) -> None:
    target = run(pod, "target", ["sleep", "1001"], security=pid_mode(NS.CONTAINER))
    debug = run(pod, "debug", ["sleep", "1002"], security=pid_mode(NS.TARGET, target))
    procs = processes(pod, debug)
    assert procs[1] == "sleep 1001"
    assert "sleep 1002" in procs.values()
    # The target sees the debug container too: one namespace.
    assert "sleep 1002" in processes(pod, target).values()
    # A target that does not exist is refused.
    err = create_refused(pod, pod.container_config(
        "ghost", security=pid_mode(NS.TARGET, "0" * 64)))
    assert err.code() == grpc.StatusCode.NOT_FOUND, err.details()
