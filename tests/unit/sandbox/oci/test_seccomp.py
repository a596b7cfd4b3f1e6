"""Seccomp profiles: the RuntimeDefault profile, Localhost profiles, and real runc runs.

The unit tests judge a profile through ``verdict()``, a small model of how runc/libseccomp
apply an OCI profile to one syscall with given arguments. The real tests at the end check
the same profile where it counts: inside a container started by runc.
"""

from __future__ import annotations

import errno
import importlib.resources
import json
import os
import platform
import secrets
import subprocess
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sandbox.oci.capabilities import (
    ALL_CAPABILITIES,
    DEFAULT_CAPABILITIES,
    bounding_set,
    container_capabilities,
)
from sandbox.oci.seccomp import (
    ACTIONS,
    MAX_PROFILE_BYTES,
    OPERATORS,
    SeccompError,
    default_profile,
    load_localhost_profile,
)
from sandbox.oci.spec import (
    DEFAULT_PATH_ENV,
    OCI_VERSION,
    base_mounts,
    bind_mount,
    default_device_rules,
    namespace,
    write_bundle,
)
from tests.unit.sandbox.oci.cgroup_cleanup import remove_cgroup_tree

Profile = dict[str, Any]

ALLOW = "SCMP_ACT_ALLOW"
ERRNO = "SCMP_ACT_ERRNO"
EPERM = ("errno", errno.EPERM)
ENOSYS = ("errno", errno.ENOSYS)
ALLOWED = ("allow", 0)

CLONE_NAMESPACE_FLAGS = {
    "CLONE_NEWNS": 0x00020000,
    "CLONE_NEWCGROUP": 0x02000000,
    "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000,
    "CLONE_NEWUSER": 0x10000000,
    "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000,
}
# What glibc's pthread_create passes: VM|FS|FILES|SIGHAND|THREAD|SYSVSEM|SETTLS|
# PARENT_SETTID|CHILD_CLEARTID.
CLONE_THREAD_FLAGS = 0x003D0F00
SIGCHLD = 17


def _compare(op: str, arg: int, value: int, value_two: int) -> bool:
    return {
        "SCMP_CMP_NE": arg != value,
        "SCMP_CMP_LT": arg < value,
        "SCMP_CMP_LE": arg <= value,
        "SCMP_CMP_EQ": arg == value,
        "SCMP_CMP_GE": arg >= value,
        "SCMP_CMP_GT": arg > value,
        "SCMP_CMP_MASKED_EQ": arg & value == value_two,
    }[op]


def verdict(profile: Profile, syscall: str, *args: int) -> tuple[str, int]:
    """("allow", 0) or ("errno", n) for ``syscall(*args)`` under ``profile``.

    Every rule naming the syscall whose argument checks all hold applies; the profiles here
    never give one call two different outcomes, and this insists on it.
    """
    outcomes = set()
    for rule in profile["syscalls"]:
        if syscall not in rule["names"]:
            continue
        checks = rule.get("args", [])
        if all(
            _compare(c["op"], args[c["index"]] if c["index"] < len(args) else 0,
                     c["value"], c.get("valueTwo", 0))
            for c in checks
        ):
            outcomes.add(_outcome(rule["action"], rule.get("errnoRet"), profile))
    if not outcomes:
        return _outcome(profile["defaultAction"], profile.get("defaultErrnoRet"), profile)
    assert len(outcomes) == 1, (syscall, outcomes)
    return outcomes.pop()


def _outcome(action: str, errno_ret: int | None, profile: Profile) -> tuple[str, int]:
    if action == ALLOW:
        return ALLOWED
    assert action == ERRNO, action
    return ("errno", errno.EPERM if errno_ret is None else errno_ret)


def with_caps(*extra: str) -> list[str]:
    return [*DEFAULT_CAPABILITIES, *extra]


# --- the RuntimeDefault profile ---------------------------------------------------------------


def test_default_profile_structure() -> None:
    profile = default_profile(DEFAULT_CAPABILITIES, arch="x86_64")
    assert profile["defaultAction"] == ERRNO
    assert profile["defaultErrnoRet"] == errno.EPERM
    assert set(profile) == {"defaultAction", "defaultErrnoRet", "architectures", "syscalls"}
    for rule in profile["syscalls"]:
        assert set(rule) <= {"names", "action", "args", "errnoRet"}, rule
        assert rule["names"] and all(isinstance(n, str) and n for n in rule["names"])
        assert rule["action"] in ACTIONS
        for arg in rule.get("args", []):
            assert set(arg) == {"index", "value", "valueTwo", "op"}
            assert 0 <= arg["index"] <= 5 and arg["op"] in OPERATORS
    json.dumps(profile)  # what goes into config.json


@pytest.mark.parametrize(
    ("arch", "expected"),
    [
        ("x86_64", ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]),
        ("aarch64", ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]),
    ],
)
def test_default_profile_architectures(arch: str, expected: list[str]) -> None:
    assert default_profile([], arch=arch)["architectures"] == expected


def test_default_profile_on_an_unlisted_architecture_filters_the_native_one() -> None:
    assert "architectures" not in default_profile([], arch="riscv64")


def test_default_profile_arch_specific_rules() -> None:
    x86 = default_profile([], arch="x86_64")
    arm = default_profile([], arch="aarch64")
    assert verdict(x86, "arch_prctl") == ALLOWED
    assert verdict(x86, "modify_ldt") == ALLOWED
    assert verdict(arm, "arch_prctl") == EPERM
    assert verdict(arm, "set_tls") == ALLOWED
    assert verdict(x86, "set_tls") == EPERM


def test_default_profile_returns_new_objects() -> None:
    first = default_profile(DEFAULT_CAPABILITIES)
    first["syscalls"][0]["names"].append("kexec_load")
    first["syscalls"].clear()
    first["architectures"].append("SCMP_ARCH_PPC")
    second = default_profile(DEFAULT_CAPABILITIES)
    assert second["syscalls"]
    assert verdict(second, "kexec_load") == EPERM
    assert "SCMP_ARCH_PPC" not in second.get("architectures", [])


@pytest.mark.parametrize(
    "syscall",
    [
        "read", "write", "openat", "close", "execve", "execveat", "exit_group", "futex", "mmap",
        "mprotect", "brk", "rt_sigaction", "wait4", "fork", "vfork", "getpid", "epoll_wait",
        "io_uring_setup", "setuid", "setgroups", "capset", "prctl", "seccomp", "chown",
        "fchmodat", "statx", "connect", "sendmsg", "shmget", "getrandom", "uname",
        "clock_gettime", "adjtimex", "sched_setaffinity", "ioctl", "pidfd_open", "rseq",
    ],
)
def test_default_profile_allows_ordinary_syscalls(syscall: str) -> None:
    assert verdict(default_profile(DEFAULT_CAPABILITIES), syscall) == ALLOWED


NEVER_ALLOWED = [
    "keyctl", "add_key", "request_key", "kexec_load", "kexec_file_load", "userfaultfd",
    "pivot_root", "swapon", "swapoff", "uselib", "ustat", "_sysctl", "nfsservctl",
]


@pytest.mark.parametrize("syscall", NEVER_ALLOWED)
def test_default_profile_blocks_without_caps(syscall: str) -> None:
    assert verdict(default_profile(DEFAULT_CAPABILITIES), syscall) == EPERM


@pytest.mark.parametrize("syscall", NEVER_ALLOWED)
def test_some_syscalls_stay_blocked_with_every_capability(syscall: str) -> None:
    assert verdict(default_profile(ALL_CAPABILITIES), syscall) == EPERM


CAP_GATED = [
    ("CAP_SYS_ADMIN", ["mount", "umount2", "unshare", "setns", "sethostname", "setdomainname",
                       "bpf", "perf_event_open", "fsopen", "move_mount", "open_tree", "quotactl",
                       "syslog", "fanotify_init"]),
    ("CAP_SYS_PTRACE", ["ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd"]),
    ("CAP_SYS_MODULE", ["init_module", "finit_module", "delete_module"]),
    ("CAP_SYS_BOOT", ["reboot"]),
    ("CAP_SYS_TIME", ["clock_settime", "settimeofday", "stime"]),
    ("CAP_SYS_CHROOT", ["chroot"]),
    ("CAP_SYS_NICE", ["mbind", "set_mempolicy", "get_mempolicy"]),
    ("CAP_SYS_PACCT", ["acct"]),
    ("CAP_SYS_RAWIO", ["iopl", "ioperm"]),
    ("CAP_SYS_TTY_CONFIG", ["vhangup"]),
    ("CAP_DAC_READ_SEARCH", ["open_by_handle_at"]),
    ("CAP_BPF", ["bpf"]),
    ("CAP_PERFMON", ["perf_event_open"]),
    ("CAP_SYSLOG", ["syslog"]),
]


@pytest.mark.parametrize(
    ("cap", "syscall"), [(cap, name) for cap, names in CAP_GATED for name in names]
)
def test_capability_gated_syscalls(cap: str, syscall: str) -> None:
    assert verdict(default_profile(DEFAULT_CAPABILITIES), syscall) == EPERM
    assert verdict(default_profile(with_caps(cap)), syscall) == ALLOWED
    # The CRI spelling works as well as the OCI one.
    assert verdict(default_profile(with_caps(cap.removeprefix("CAP_"))), syscall) == ALLOWED


def test_one_capability_does_not_open_another_s_syscalls() -> None:
    profile = default_profile(with_caps("CAP_SYS_PTRACE", "CAP_NET_ADMIN", "CAP_NET_RAW"))
    for syscall in ("mount", "unshare", "sethostname", "reboot", "init_module", "bpf"):
        assert verdict(profile, syscall) == EPERM, syscall


def test_clone_without_namespaces_is_allowed() -> None:
    profile = default_profile(DEFAULT_CAPABILITIES)
    assert verdict(profile, "clone", SIGCHLD) == ALLOWED
    assert verdict(profile, "clone", CLONE_THREAD_FLAGS) == ALLOWED


@pytest.mark.parametrize("flag", sorted(CLONE_NAMESPACE_FLAGS))
def test_clone_with_a_namespace_flag_needs_sys_admin(flag: str) -> None:
    flags = SIGCHLD | CLONE_NAMESPACE_FLAGS[flag]
    assert verdict(default_profile(DEFAULT_CAPABILITIES), "clone", flags) == EPERM
    assert verdict(default_profile(with_caps("SYS_ADMIN")), "clone", flags) == ALLOWED


def test_clone_namespace_mask_is_the_known_one() -> None:
    mask = 0
    for value in CLONE_NAMESPACE_FLAGS.values():
        mask |= value
    assert mask == 0x7E020000
    rules = [r for r in default_profile([])["syscalls"] if r["names"] == ["clone"]]
    assert [r["args"] for r in rules] == [
        [{"index": 0, "value": mask, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]
    ]


def test_clone3_is_enosys_without_sys_admin() -> None:
    # ENOSYS, not EPERM: glibc then falls back to clone, whose flags the filter can see.
    assert verdict(default_profile(DEFAULT_CAPABILITIES), "clone3") == ENOSYS
    assert verdict(default_profile(with_caps("CAP_SYS_ADMIN")), "clone3") == ALLOWED


@pytest.mark.parametrize("persona", [0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF])
def test_personality_allowed_values(persona: int) -> None:
    assert verdict(default_profile(DEFAULT_CAPABILITIES), "personality", persona) == ALLOWED


@pytest.mark.parametrize(
    "persona",
    [0x0400000, 0x0040000, 0x0400008, 0x1, 0x10, 0xFFFFFFFE],  # READ_IMPLIES_EXEC, ADDR_NO_RANDOMIZE
)
def test_personality_other_values_blocked(persona: int) -> None:
    assert verdict(default_profile(ALL_CAPABILITIES), "personality", persona) == EPERM


@pytest.mark.parametrize(("family", "expected"), [(1, ALLOWED), (2, ALLOWED), (10, ALLOWED),
                                                  (16, ALLOWED), (17, ALLOWED), (40, EPERM)])
def test_socket_families(family: int, expected: tuple[str, int]) -> None:
    # AF_UNIX, AF_INET, AF_INET6, AF_NETLINK, AF_PACKET allowed; AF_VSOCK never.
    assert verdict(default_profile(ALL_CAPABILITIES), "socket", family, 1, 0) == expected


def test_default_profile_is_a_valid_localhost_profile(tmp_path: Path) -> None:
    # The built-in file goes through the same reader a Localhost profile does.
    data = importlib.resources.files("sandbox.oci").joinpath("seccomp_default.json").read_bytes()
    path = tmp_path / "default.json"
    path.write_bytes(data)
    cap_sets: list[Collection[str]] = [[], DEFAULT_CAPABILITIES, ALL_CAPABILITIES]
    for caps in cap_sets:
        for arch in ("x86_64", "aarch64"):
            assert load_localhost_profile(path, caps, arch=arch) == default_profile(caps, arch=arch)


# --- Localhost profiles -----------------------------------------------------------------------

# What critest writes (pkg/validate/security_context_linux.go).
BLOCK_HOSTNAME = """{
     "defaultAction": "SCMP_ACT_ALLOW",
     "syscalls": [
         {
             "names": ["sethostname"],
             "action": "SCMP_ACT_ERRNO"
         }
     ]
}"""


def write(tmp_path: Path, document: object, name: str = "profile.json") -> Path:
    path = tmp_path / name
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return path


def test_localhost_critest_profile(tmp_path: Path) -> None:
    profile = load_localhost_profile(write(tmp_path, BLOCK_HOSTNAME), with_caps("SYS_ADMIN"))
    assert profile == {
        "defaultAction": ALLOW,
        "syscalls": [{"names": ["sethostname"], "action": ERRNO}],
    }
    assert verdict(profile, "sethostname") == EPERM
    assert verdict(profile, "mount") == ALLOWED


def test_localhost_docker_fields_converted(tmp_path: Path) -> None:
    document = {
        "defaultAction": "SCMP_ACT_KILL_PROCESS",
        "defaultErrnoRet": 38,
        "flags": ["SECCOMP_FILTER_FLAG_LOG"],
        "syscalls": [
            {"name": "chmod", "action": "SCMP_ACT_ERRNO", "errnoRet": 13, "comment": "x"},
            {
                "names": ["socket"],
                "action": "SCMP_ACT_ALLOW",
                "args": [{"index": 1, "value": 2, "op": "SCMP_CMP_EQ"},
                         {"index": 0, "value": 0xFF, "valueTwo": 2, "op": "SCMP_CMP_MASKED_EQ"}],
            },
            {"names": ["read", "write"], "action": "SCMP_ACT_LOG", "args": None},
        ],
    }
    profile = load_localhost_profile(write(tmp_path, document), [])
    assert profile == {
        "defaultAction": "SCMP_ACT_KILL_PROCESS",
        "defaultErrnoRet": 38,
        "flags": ["SECCOMP_FILTER_FLAG_LOG"],
        "syscalls": [
            {"names": ["chmod"], "action": ERRNO, "errnoRet": 13},
            {
                "names": ["socket"],
                "action": ALLOW,
                "args": [{"index": 1, "value": 2, "valueTwo": 0, "op": "SCMP_CMP_EQ"},
                         {"index": 0, "value": 0xFF, "valueTwo": 2, "op": "SCMP_CMP_MASKED_EQ"}],
            },
            {"names": ["read", "write"], "action": "SCMP_ACT_LOG"},
        ],
    }


ARCH_MAP_PROFILE = {
    "defaultAction": "SCMP_ACT_ERRNO",
    "archMap": [
        {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
        {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]},
        {"architecture": "SCMP_ARCH_RISCV64", "subArchitectures": None},
    ],
    "syscalls": [],
}


@pytest.mark.parametrize(
    ("arch", "expected"),
    [
        ("x86_64", ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]),
        ("aarch64", ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]),
        ("riscv64", ["SCMP_ARCH_RISCV64"]),
        ("s390x", None),
    ],
)
def test_localhost_arch_map(tmp_path: Path, arch: str, expected: list[str] | None) -> None:
    profile = load_localhost_profile(write(tmp_path, ARCH_MAP_PROFILE), [], arch=arch)
    assert profile.get("architectures") == expected


def test_localhost_explicit_architectures(tmp_path: Path) -> None:
    document = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"]}
    profile = load_localhost_profile(write(tmp_path, document), [], arch="aarch64")
    assert profile["architectures"] == ["SCMP_ARCH_X86_64"]


def test_localhost_includes_and_excludes(tmp_path: Path) -> None:
    document = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [
            {"names": ["a"], "action": ALLOW, "includes": {"caps": ["CAP_SYS_ADMIN", "NET_ADMIN"]}},
            {"names": ["b"], "action": ALLOW, "excludes": {"caps": ["CAP_SYS_ADMIN", "CAP_BPF"]}},
            {"names": ["c"], "action": ALLOW, "includes": {"arches": ["amd64", "x32"]}},
            {"names": ["d"], "action": ALLOW, "excludes": {"arches": ["arm64"]}},
            {"names": ["e"], "action": ALLOW, "includes": {"minKernel": "1.0"}},
            {"names": ["f"], "action": ALLOW, "includes": {"minKernel": "999.0"}},
            {"names": ["g"], "action": ALLOW, "excludes": {"minKernel": "999.0"}},
            {"names": ["h"], "action": ALLOW, "includes": {"arches": ["aarch64"]}},
            {"names": ["i"], "action": ALLOW, "includes": {}, "excludes": {"caps": []}},
        ],
    }
    path = write(tmp_path, document)

    def names(caps: Collection[str], arch: str) -> list[str]:
        profile = load_localhost_profile(path, caps, arch=arch)
        return [n for rule in profile["syscalls"] for n in rule["names"]]

    assert names([], "x86_64") == ["b", "c", "d", "e", "g", "i"]
    assert names(["CAP_SYS_ADMIN"], "x86_64") == ["c", "d", "e", "g", "i"]
    assert names(["sys_admin", "net_admin"], "aarch64") == ["a", "e", "g", "h", "i"]
    assert names(["CAP_BPF"], "aarch64") == ["e", "g", "h", "i"]


def test_localhost_empty_syscalls(tmp_path: Path) -> None:
    empty: list[list[str] | None] = [None, []]
    for syscalls in empty:
        document = {"defaultAction": "SCMP_ACT_LOG", "syscalls": syscalls}
        assert load_localhost_profile(write(tmp_path, document), []) == {
            "defaultAction": "SCMP_ACT_LOG", "syscalls": [],
        }


def test_localhost_listener_passes_through(tmp_path: Path) -> None:
    document = {
        "defaultAction": ALLOW,
        "listenerPath": "/run/agent.sock",
        "listenerMetadata": "pod=x",
        "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}],
    }
    profile = load_localhost_profile(write(tmp_path, document), [])
    assert profile["listenerPath"] == "/run/agent.sock"
    assert profile["listenerMetadata"] == "pod=x"


def test_localhost_file_of_exactly_the_cap_is_read(tmp_path: Path) -> None:
    text = json.dumps({"defaultAction": ALLOW})
    path = write(tmp_path, text + " " * (MAX_PROFILE_BYTES - len(text)))
    assert path.stat().st_size == MAX_PROFILE_BYTES
    assert load_localhost_profile(path, []) == {"defaultAction": ALLOW, "syscalls": []}


def expect_error(path: Path, *fragments: str) -> None:
    with pytest.raises(SeccompError) as info:
        load_localhost_profile(path, DEFAULT_CAPABILITIES, arch="x86_64")
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message


def test_localhost_missing_file(tmp_path: Path) -> None:
    expect_error(tmp_path / "nope.json", "does not exist")


def test_localhost_relative_path() -> None:
    expect_error(Path("profiles/block.json"), "absolute")


def test_localhost_directory(tmp_path: Path) -> None:
    expect_error(tmp_path, "not a regular file")


def test_localhost_fifo_does_not_hang(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    expect_error(fifo, "not a regular file")


def test_localhost_too_large(tmp_path: Path) -> None:
    text = json.dumps({"defaultAction": ALLOW})
    expect_error(write(tmp_path, text + " " * (MAX_PROFILE_BYTES + 1 - len(text))), "larger than")


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("", "not valid JSON"),
        ("{'defaultAction': 1}", "not valid JSON"),
        ('{"defaultAction": "SCMP_ACT_ALLOW",', "not valid JSON"),
        (b"\xff\xfe\xfa".decode("latin-1"), "not valid JSON"),
        ("[" * 100_000 + "]" * 100_000, "not valid JSON"),
        ('["SCMP_ACT_ALLOW"]', "JSON object"),
        ("null", "JSON object"),
        ("{}", "unknown action None"),
        ('{"defaultAction": "SCMP_ACT_PERMIT"}', "unknown action 'SCMP_ACT_PERMIT'"),
        ('{"defaultAction": "scmp_act_allow"}', "unknown action"),
        ('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": {}}', "syscalls must be a list"),
        ('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": ["read"]}', "syscalls[0] must be an object"),
    ],
)
def test_localhost_bad_documents(tmp_path: Path, content: str, fragment: str) -> None:
    expect_error(write(tmp_path, content), fragment)


def rule_error(tmp_path: Path, rule: dict[str, Any], *fragments: str, **top: Any) -> None:
    rules = [{"names": ["read"], "action": ALLOW}, rule]
    document = {"defaultAction": "SCMP_ACT_ERRNO", **top, "syscalls": rules}
    expect_error(write(tmp_path, document), *fragments)


@pytest.mark.parametrize(
    ("rule", "fragment"),
    [
        ({"names": ["read"], "action": "SCMP_ACT_DENY"}, "syscalls[1].action: unknown action"),
        ({"names": ["read"]}, "syscalls[1].action: unknown action None"),
        ({"name": "read", "names": ["write"], "action": ALLOW}, "both name and names"),
        ({"action": ALLOW}, "names no syscall"),
        ({"names": [], "action": ALLOW}, "names no syscall"),
        ({"names": [""], "action": ALLOW}, "names no syscall"),
        ({"names": "read", "action": ALLOW}, "must be a list of strings"),
        ({"names": ["read", 3], "action": ALLOW}, "must be a list of strings"),
        ({"name": 3, "action": ALLOW}, "name must be a string"),
        ({"names": ["read"], "action": ERRNO, "errnoRet": -1}, "errnoRet must be an errno number"),
        ({"names": ["read"], "action": ERRNO, "errnoRet": "1"}, "errnoRet must be an errno number"),
        ({"names": ["read"], "action": ERRNO, "errnoRet": True}, "errnoRet must be an errno number"),
        ({"names": ["read"], "action": ALLOW, "args": {"index": 0}}, "args must be a list"),
        ({"names": ["read"], "action": ALLOW, "args": [[0, 1]]}, "args[0] must be an object"),
        ({"names": ["read"], "action": ALLOW, "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]},
         "args[0].index must be 0-5"),
        ({"names": ["read"], "action": ALLOW, "args": [{"index": 0, "value": -1, "op": "SCMP_CMP_EQ"}]},
         "args[0].value must be an unsigned 64-bit integer"),
        ({"names": ["read"], "action": ALLOW,
          "args": [{"index": 0, "value": 1, "valueTwo": 1 << 64, "op": "SCMP_CMP_MASKED_EQ"}]},
         "args[0].valueTwo must be"),
        ({"names": ["read"], "action": ALLOW, "args": [{"index": 0, "value": 1.5, "op": "SCMP_CMP_EQ"}]},
         "args[0].value must be"),
        ({"names": ["read"], "action": ALLOW, "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_IN"}]},
         "unknown operator 'SCMP_CMP_IN'"),
        ({"names": ["read"], "action": ALLOW, "args": [{"index": 0, "value": 1}]}, "unknown operator None"),
        ({"names": ["read"], "action": ALLOW, "includes": ["CAP_SYS_ADMIN"]}, "includes must be an object"),
        ({"names": ["read"], "action": ALLOW, "includes": {"caps": "CAP_SYS_ADMIN"}},
         "includes.caps must be a list of strings"),
        ({"names": ["read"], "action": ALLOW, "excludes": {"arches": [1]}},
         "excludes.arches must be a list of strings"),
        ({"names": ["read"], "action": ALLOW, "includes": {"minKernel": "four"}}, 'minKernel must look like'),
        ({"names": ["read"], "action": ALLOW, "includes": {"minKernel": 4.8}}, 'minKernel must look like'),
    ],
)
def test_localhost_bad_rules(tmp_path: Path, rule: dict[str, Any], fragment: str) -> None:
    rule_error(tmp_path, rule, fragment)


@pytest.mark.parametrize(
    ("top", "fragment"),
    [
        ({"defaultErrnoRet": 5000}, "defaultErrnoRet must be an errno number"),
        ({"architectures": ["SCMP_ARCH_X86_64"], "archMap": ARCH_MAP_PROFILE["archMap"]},
         "either architectures or archMap"),
        ({"architectures": ["x86_64"]}, "unknown architecture 'x86_64'"),
        ({"architectures": "SCMP_ARCH_X86_64"}, "architectures must be a list of strings"),
        ({"archMap": {"architecture": "SCMP_ARCH_X86_64"}}, "archMap must be a list"),
        ({"archMap": [{"subArchitectures": []}]}, "archMap[0] needs an architecture"),
        ({"archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": "SCMP_ARCH_X86"}]},
         "subArchitectures must be a list of strings"),
        ({"flags": "SECCOMP_FILTER_FLAG_LOG"}, "flags must be a list of strings"),
        ({"listenerPath": 7}, "listenerPath must be a string"),
    ],
)
def test_localhost_bad_top_level_fields(tmp_path: Path, top: dict[str, Any], fragment: str) -> None:
    rule_error(tmp_path, {"names": ["write"], "action": ALLOW}, fragment, **top)


# --- real containers --------------------------------------------------------------------------

RUNC = Path("/usr/sbin/runc")
BUSYBOX = Path("/bin/busybox")
PYTHON = Path("/usr/bin/python3")
CGROUP_ROOT = Path("/sys/fs/cgroup")
WAIT = 60.0  # generous bound; never a timing assertion

real = pytest.mark.skipif(
    os.geteuid() != 0 or not (RUNC.exists() and BUSYBOX.exists()),
    reason="needs root, /usr/sbin/runc and /bin/busybox",
)




@dataclass
class Runc:
    tmp: Path
    cgroup_parent: str
    ids: list[str] = field(default_factory=list)

    @property
    def root(self) -> Path:
        return self.tmp / "runc"

    def run(
        self, args: list[str], *, seccomp: Profile | None, add_caps: list[str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``args`` as root in a fresh container whose rootfs shows the host's /usr."""
        ctr_id = f"seccomp-{secrets.token_hex(8)}"
        self.ids.append(ctr_id)
        bundle = self.tmp / ctr_id
        rootfs = bundle / "rootfs"
        rootfs.mkdir(parents=True)
        rootfs.chmod(0o755)
        mounts = base_mounts(private_mqueue=True)
        # The host's programs and libraries, read-only. On a merged-/usr host /bin, /lib, ...
        # are symlinks into /usr; the same symlinks in the rootfs keep /bin/busybox working.
        for top in ("usr", "bin", "sbin", "lib", "lib64"):
            host = Path("/") / top
            if host.is_symlink():
                (rootfs / top).symlink_to(os.readlink(host))
            elif host.is_dir():
                mounts.append(bind_mount(host, f"/{top}", ["ro", "nosuid", "nodev"]))
        linux: Profile = {
            "namespaces": [namespace(ns) for ns in ("mount", "pid", "ipc", "uts", "network")],
            "cgroupsPath": f"{self.cgroup_parent}/{ctr_id}",
            "resources": {"devices": default_device_rules()},
        }
        if seccomp is not None:
            linux["seccomp"] = seccomp
        spec: Profile = {
            "ociVersion": OCI_VERSION,
            "process": {
                "terminal": False,
                "user": {"uid": 0, "gid": 0},
                "args": args,
                "env": [DEFAULT_PATH_ENV],
                "cwd": "/",
                "capabilities": container_capabilities(
                    add_caps or [], [], privileged=False, bounding=bounding_set(),
                ),
                "noNewPrivileges": True,
            },
            "root": {"path": "rootfs", "readonly": False},
            "hostname": "seccomp-test",
            "mounts": mounts,
            "linux": linux,
        }
        write_bundle(bundle, spec)
        return subprocess.run(
            [str(RUNC), "--root", str(self.root), "run", "--bundle", str(bundle), ctr_id],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=WAIT, check=False,
        )


@pytest.fixture
def runc(tmp_path: Path) -> Iterator[Runc]:
    env = Runc(tmp_path, f"/pycri-test-{secrets.token_hex(4)}")
    try:
        yield env
    finally:
        for ctr_id in env.ids:
            subprocess.run(
                [str(RUNC), "--root", str(env.root), "delete", "--force", ctr_id],
                capture_output=True, check=False, timeout=WAIT,
            )
        remove_cgroup_tree(env.cgroup_parent)


@real
def test_real_default_profile_is_enforced(runc: Runc) -> None:
    profile = default_profile(DEFAULT_CAPABILITIES)
    ok = runc.run([str(BUSYBOX), "true"], seccomp=profile)
    assert ok.returncode == 0, ok.stderr
    status = runc.run([str(BUSYBOX), "grep", "Seccomp:", "/proc/self/status"], seccomp=profile)
    assert status.returncode == 0, status.stderr
    assert status.stdout.split() == ["Seccomp:", "2"]  # filter mode
    unconfined = runc.run([str(BUSYBOX), "grep", "Seccomp:", "/proc/self/status"], seccomp=None)
    assert unconfined.stdout.split() == ["Seccomp:", "0"]


@real
def test_real_sethostname_blocked_by_the_filter_not_the_kernel(runc: Runc) -> None:
    # The container holds CAP_SYS_ADMIN in its own UTS namespace, so the kernel would allow
    # sethostname: only a profile built without CAP_SYS_ADMIN can refuse it.
    args = [str(BUSYBOX), "hostname", "renamed"]
    blocked = runc.run(args, seccomp=default_profile(DEFAULT_CAPABILITIES), add_caps=["SYS_ADMIN"])
    assert blocked.returncode != 0
    assert "Operation not permitted" in blocked.stderr
    allowed = runc.run(
        [str(BUSYBOX), "sh", "-c", "hostname renamed && hostname"],
        seccomp=default_profile(with_caps("CAP_SYS_ADMIN")), add_caps=["SYS_ADMIN"],
    )
    assert allowed.returncode == 0, allowed.stderr
    assert allowed.stdout.strip() == "renamed"


@real
def test_real_localhost_profile(runc: Runc, tmp_path: Path) -> None:
    # critest's "block chmod" Localhost profile, through the docker -> OCI conversion.
    path = write(tmp_path, {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["chmod", "fchmodat"], "action": "SCMP_ACT_ERRNO"}],
    })
    blocked = runc.run([str(BUSYBOX), "chmod", "400", "/"],
                       seccomp=load_localhost_profile(path, DEFAULT_CAPABILITIES))
    assert blocked.returncode != 0
    assert "Operation not permitted" in blocked.stderr
    allowed = runc.run([str(BUSYBOX), "chmod", "755", "/"],
                       seccomp=default_profile(DEFAULT_CAPABILITIES))
    assert allowed.returncode == 0, allowed.stderr


# Runs inside the container: each probe prints the errno its raw syscall ended with (0 for
# success). Arguments are chosen to be harmless when the kernel does run the call.
PROBE = r"""
import ctypes, json, os, platform, sys
NR = {
    "x86_64": dict(add_key=248, keyctl=250, unshare=272, clone3=435, userfaultfd=323,
                   personality=135, socket=41, bpf=321, open_by_handle_at=304, ptrace=101),
    "aarch64": dict(add_key=217, keyctl=219, unshare=97, clone3=435, userfaultfd=282,
                    personality=92, socket=198, bpf=280, open_by_handle_at=265, ptrace=117),
}[platform.machine()]
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
L = ctypes.c_long
def call(name, *args):
    ctypes.set_errno(0)
    ret = libc.syscall(L(NR[name]), *(L(a) for a in args))
    return ctypes.get_errno() if ret == -1 else 0
out = {
    "keyctl": call("keyctl", 0, -3, 0),                    # KEYCTL_GET_KEYRING_ID, session
    "add_key": call("add_key", 0, 0, 0, 0, 0),
    "unshare": call("unshare", 0x04000000),                # CLONE_NEWUTS
    "clone3": call("clone3", 0, 0),
    "userfaultfd": call("userfaultfd", 1 | os.O_CLOEXEC),  # UFFD_USER_MODE_ONLY
    "personality_query": call("personality", 0xFFFFFFFF),
    "personality_exec": call("personality", 0x0400000),    # READ_IMPLIES_EXEC
    "socket_vsock": call("socket", 40, 1, 0),
    "bpf": call("bpf", 9999, 0, 0),
    "open_by_handle_at": call("open_by_handle_at", -1, 0, 0),
    "ptrace": call("ptrace", 16, 999999, 0, 0),            # PTRACE_ATTACH to nobody
}
pid = os.posix_spawn("/bin/busybox", ["busybox", "true"], {})  # glibc tries clone3 first
out["posix_spawn"] = os.waitpid(pid, 0)[1]
print(json.dumps(out))
"""


@real
@pytest.mark.skipif(not PYTHON.exists() or platform.machine() not in ("x86_64", "aarch64"),
                    reason="needs /usr/bin/python3 on x86_64 or aarch64")
def test_real_syscalls_blocked_by_the_filter(runc: Runc) -> None:
    # The container holds the capabilities the kernel would check, so whatever refuses a
    # call under the default profile (built without them) but not unconfined is the filter.
    caps = ["SYS_ADMIN", "DAC_READ_SEARCH"]
    argv = [str(PYTHON), "-I", "-S", "-c", PROBE]
    confined = runc.run(argv, seccomp=default_profile(DEFAULT_CAPABILITIES), add_caps=caps)
    assert confined.returncode == 0, confined.stderr
    unconfined = runc.run(argv, seccomp=None, add_caps=caps)
    assert unconfined.returncode == 0, unconfined.stderr
    inside, outside = json.loads(confined.stdout), json.loads(unconfined.stdout)

    expected = dict.fromkeys(
        ["keyctl", "add_key", "unshare", "userfaultfd", "personality_exec", "socket_vsock", "bpf",
         "open_by_handle_at", "ptrace"],
        errno.EPERM,
    )
    expected |= {"clone3": errno.ENOSYS, "personality_query": 0, "posix_spawn": 0}
    assert inside == expected
    for name, code in expected.items():
        if code == errno.EPERM:
            assert outside[name] != errno.EPERM, name
    assert outside["clone3"] != errno.ENOSYS
    assert outside["posix_spawn"] == 0
