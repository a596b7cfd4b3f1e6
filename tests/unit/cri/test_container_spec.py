"""The OCI spec of an application container: the pure translation rules (command, env, cwd,
resources, mounts) and the whole spec from a fake pod, image config and identity."""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from cri.api import api_pb2
from cri.errors import InvalidArgument
from cri.image.manifest import ImageConfig
from cri.runtime import container_spec as cs
from cri.runtime.container_spec import (
    SpecInputs,
    command,
    container_spec,
    cri_mounts,
    environment,
    missing_host_paths,
    resources,
    working_dir,
)
from cri.store.sandbox import Sandbox, SandboxMeta, SandboxState, SandboxStatus
from sandbox.cgroups.features import Features
from sandbox.oci.capabilities import bounding_set
from sandbox.oci.mountinfo import MountEntry, propagation_of
from sandbox.oci.spec import DEFAULT_PATH_ENV, MASKED_PATHS, READONLY_PATHS
from sandbox.oci.user import Identity

P = api_pb2.MountPropagation
PROFILE = api_pb2.SecurityProfile.ProfileType
Spec = dict[str, Any]


def cfg(**kwargs: Any) -> api_pb2.ContainerConfig:
    return api_pb2.ContainerConfig(metadata=api_pb2.ContainerMetadata(name="app"), **kwargs)


def envs(**pairs: str) -> list[api_pb2.KeyValue]:
    return [api_pb2.KeyValue(key=k, value=v.encode()) for k, v in pairs.items()]


# --- command ---------------------------------------------------------------------------------

IMAGE = ImageConfig(entrypoint=("/entry", "-e"), cmd=("serve", "--port=80"))


@pytest.mark.parametrize(("command_", "args", "image", "expected"), [
    ([], [], IMAGE, ["/entry", "-e", "serve", "--port=80"]),
    (["/bin/sh", "-c"], [], IMAGE, ["/bin/sh", "-c"]),  # CRI command drops ENTRYPOINT and CMD
    (["/bin/sh"], ["-c", "true"], IMAGE, ["/bin/sh", "-c", "true"]),
    ([], ["other"], IMAGE, ["/entry", "-e", "other"]),  # CRI args replace CMD only
    ([], [], ImageConfig(cmd=("sh",)), ["sh"]),
    ([], ["x"], ImageConfig(cmd=("sh",)), ["x"]),
    ([], [], ImageConfig(entrypoint=("/e",)), ["/e"]),
])
def test_command(command_: list[str], args: list[str], image: ImageConfig, expected: list[str]) -> None:
    assert command(cfg(command=command_, args=args), image) == expected


def test_no_command_at_all() -> None:
    with pytest.raises(InvalidArgument, match="no command"):
        command(cfg(), ImageConfig())


# --- environment -----------------------------------------------------------------------------

def test_key_value_is_bytes_in_this_build() -> None:
    # The proto declares KeyValue.value as bytes; environment() must decode it.
    assert isinstance(api_pb2.KeyValue(key="a", value=b"x").value, bytes)


def as_dict(env: list[str]) -> dict[str, str]:
    out = dict(item.split("=", 1) for item in env)
    assert len(out) == len(env)  # every name once
    return out


def test_environment_order_and_override() -> None:
    image = ImageConfig(env=("PATH=/img/bin", "A=image", "B=image", "EMPTY"))
    env = environment(cfg(envs=envs(B="cri", C="c=with=equals", A="cri2")), image, "pod-host", "/home/u")
    assert as_dict(env) == {
        "PATH": "/img/bin", "A": "cri2", "B": "cri", "EMPTY": "", "C": "c=with=equals",
        "HOSTNAME": "pod-host", "HOME": "/home/u",
    }
    assert env[:4] == ["PATH=/img/bin", "A=cri2", "B=cri", "EMPTY="]


def test_environment_later_cri_value_wins() -> None:
    config = cfg(envs=[api_pb2.KeyValue(key="X", value=b"1"), api_pb2.KeyValue(key="X", value=b"2")])
    assert as_dict(environment(config, ImageConfig(), "h", "/"))["X"] == "2"


def test_environment_defaults() -> None:
    env = as_dict(environment(cfg(), ImageConfig(), "pod-host", ""))
    assert env == {"PATH": DEFAULT_PATH_ENV.split("=", 1)[1], "HOSTNAME": "pod-host", "HOME": "/"}
    # The image's or the CRI's own values are kept.
    env = as_dict(environment(cfg(envs=envs(HOME="/cri")), ImageConfig(env=("HOSTNAME=img",)), "h", "/u"))
    assert env["HOME"] == "/cri" and env["HOSTNAME"] == "img"


def test_environment_values_are_decoded_utf8() -> None:
    env = as_dict(environment(cfg(envs=envs(GREETING="grüß dich\nline2")), ImageConfig(), "h", "/"))
    assert env["GREETING"] == "grüß dich\nline2"


@pytest.mark.parametrize("kv", [
    api_pb2.KeyValue(key="A", value=b"x\x00y"),
    api_pb2.KeyValue(key="", value=b"x"),
    api_pb2.KeyValue(key="A=B", value=b"x"),
    api_pb2.KeyValue(key="A\x00", value=b"x"),
])
def test_environment_refuses(kv: api_pb2.KeyValue) -> None:
    with pytest.raises(InvalidArgument):
        environment(cfg(envs=[kv]), ImageConfig(), "h", "/")


# --- working dir -----------------------------------------------------------------------------

@pytest.mark.parametrize(("cri", "image", "expected"), [
    ("", "", "/"),
    ("", "/srv", "/srv"),
    ("/work", "/srv", "/work"),
    ("/a/./b/../c/", "", "/a/c"),
    ("/data/proc/self/fd/3", "", "/data/proc/self/fd/3"),
    ("/procfs", "", "/procfs"),
])
def test_working_dir(cri: str, image: str, expected: str) -> None:
    assert working_dir(cfg(working_dir=cri), ImageConfig(working_dir=image)) == expected


@pytest.mark.parametrize("cwd", ["relative", "./x", "proc/self/fd/3"])
def test_relative_working_dir_is_refused(cwd: str) -> None:
    with pytest.raises(InvalidArgument, match="absolute"):
        working_dir(cfg(working_dir=cwd), ImageConfig())
    with pytest.raises(InvalidArgument, match="absolute"):
        working_dir(cfg(), ImageConfig(working_dir=cwd))


# CVE-2024-21626: runc leaked a host fd into the container's init; a cwd through a process's
# fd table reached the host filesystem.
@pytest.mark.parametrize("cwd", [
    "/proc/self/fd/3", "/proc/self/fd", "/proc/self/fd/", "/proc/1/fd", "/proc/1/fd/7",
    "/proc/thread-self/fd", "/proc/thread-self/fd/8", "/proc/self/task/1/fd/3",
    "/proc/self/../self/fd/3", "/proc/./self/fd/3", "///proc/self/fd/3", "/proc//self/fd/3",
    "/proc/self/fdinfo", "/proc",
])
def test_working_dir_through_an_fd_table_is_refused(cwd: str) -> None:
    with pytest.raises(InvalidArgument, match="/proc"):
        working_dir(cfg(working_dir=cwd), ImageConfig())
    with pytest.raises(InvalidArgument, match="/proc"):
        working_dir(cfg(), ImageConfig(working_dir=cwd))


@pytest.mark.parametrize("cwd", ["//proc/self/fd/3", "/proc/self/root/proc/self/fd/3", "/proc/1/cwd/x"])
def test_working_dir_other_spellings_of_the_fd_table_are_refused(cwd: str) -> None:
    """normpath keeps a leading "//", and /proc/self/root leads back into /proc: all of /proc
    is refused (CVE-2024-21626)."""
    with pytest.raises(InvalidArgument):
        working_dir(cfg(working_dir=cwd), ImageConfig())


# --- resources -------------------------------------------------------------------------------

# What container cgroups get on a host with every optional feature (v1: hierarchies, v2: the
# root's controllers), and the same hosts less one feature (see sandbox/cgroups/features.py).
V1 = Features(v2=False, controllers=frozenset(
    {"blkio", "cpu", "cpuacct", "cpuset", "devices", "freezer", "hugetlb", "memory", "misc",
     "pids", "rdma"}), files=frozenset({"blkio.weight", "memory.memsw.limit_in_bytes"}))
V2 = Features(v2=True, controllers=frozenset(
    {"cpu", "cpuset", "hugetlb", "io", "memory", "misc", "pids", "rdma"}),
    files=frozenset({"io.weight", "memory.swap.max"}))


def without(features: Features, *names: str) -> Features:
    return replace(features, controllers=features.controllers - set(names),
                   files=features.files - set(names))


def test_resources_memory_limit_turns_swap_off_on_v1_and_v2() -> None:
    res = api_pb2.LinuxContainerResources(memory_limit_in_bytes=256 << 20)
    assert resources(res, V1)["memory"] == {
        "limit": 256 << 20, "swap": 256 << 20, "swappiness": 0}
    assert resources(res, V2)["memory"] == {"limit": 256 << 20, "swap": 256 << 20}


def test_resources_without_swap_accounting_set_no_swap_limit() -> None:
    """runc fails the create on a swap limit whose file the kernel does not have."""
    res = api_pb2.LinuxContainerResources(memory_limit_in_bytes=256 << 20)
    assert resources(res, without(V1, "memory.memsw.limit_in_bytes"))["memory"] == {
        "limit": 256 << 20, "swappiness": 0}
    no_swap = without(V2, "memory.swap.max")
    assert resources(res, no_swap) == {"memory": {"limit": 256 << 20}}
    with pytest.raises(InvalidArgument, match=r"'memory\.swap\.max'.*no memory\.swap\.max"):
        resources(api_pb2.LinuxContainerResources(unified={"memory.swap.max": "0"}), no_swap)


def test_resources_without_limit() -> None:
    empty = api_pb2.LinuxContainerResources()
    assert resources(empty, V1) == {"memory": {"swappiness": 0}}
    # v2: swap off for the container itself too, as a value runc hands systemd as well.
    assert resources(empty, V2) == {"unified": {"memory.swap.max": "0"}}


def test_resources_cpu() -> None:
    res = api_pb2.LinuxContainerResources(cpu_shares=512, cpu_quota=50000, cpu_period=100000,
                                          cpuset_cpus="0-1", cpuset_mems="0")
    assert resources(res, V2)["cpu"] == {
        "shares": 512, "quota": 50000, "period": 100000, "cpus": "0-1", "mems": "0"}
    assert "cpu" not in resources(api_pb2.LinuxContainerResources(), V2)
    for host in (V1, V2):
        assert resources(res, without(host, "cpuset"))["cpu"] == {
            "shares": 512, "quota": 50000, "period": 100000}


def test_resources_negative_memory_limit_is_refused() -> None:
    for host in (V1, V2):
        with pytest.raises(InvalidArgument, match="negative"):
            resources(api_pb2.LinuxContainerResources(memory_limit_in_bytes=-1), host)


def test_resources_unified() -> None:
    res = api_pb2.LinuxContainerResources(unified={"memory.high": "1000000", "pids.max": "10"})
    with pytest.raises(InvalidArgument, match="v2"):
        resources(res, V1)
    assert resources(res, V2)["unified"] == {
        "memory.high": "1000000", "pids.max": "10", "memory.swap.max": "0"}
    explicit = api_pb2.LinuxContainerResources(unified={"memory.swap.max": "max"})
    assert resources(explicit, V2)["unified"] == {"memory.swap.max": "max"}


@pytest.mark.parametrize(("key", "lacking"), [
    ("rdma.max", "rdma"), ("misc.max", "misc"), ("hugetlb.2MB.max", "hugetlb"),
    ("io.max", "io"), ("io.weight", "io"), ("io.weight", "io.weight"),
    ("io.bfq.weight", "io.bfq.weight"), ("pids.max", "pids"), ("cpuset.cpus", "cpuset"),
])
def test_resources_unified_key_the_cgroup_cannot_take_is_refused(key: str, lacking: str) -> None:
    """A key the client named is refused, by name, rather than silently not applied."""
    res = api_pb2.LinuxContainerResources(unified={key: "1"})
    with pytest.raises(InvalidArgument, match=re.escape(f"'{key}'")):
        resources(res, without(V2, lacking))
    with_it = replace(V2, files=V2.files | {"io.bfq.weight"})
    assert resources(res, with_it)["unified"][key] == "1"


def test_resources_hugepages() -> None:
    res = api_pb2.LinuxContainerResources(hugepage_limits=[
        api_pb2.HugepageLimit(page_size="2MB", limit=4 << 20),
        api_pb2.HugepageLimit(page_size="1GB", limit=0)])
    for host in (V1, V2):
        assert resources(res, host)["hugepageLimits"] == [
            {"pageSize": "2MB", "limit": 4 << 20}, {"pageSize": "1GB", "limit": 0}]
        # Where the controller does not reach the container's cgroup (a v1 host without the
        # hierarchy) runc would fail the create on them: they are left out, nothing refused.
        assert "hugepageLimits" not in resources(res, without(host, "hugetlb"))


# --- CRI mounts ------------------------------------------------------------------------------

def mount(host: Path | str, dest: str, **kwargs: Any) -> api_pb2.Mount:
    return api_pb2.Mount(host_path=str(host), container_path=dest, **kwargs)


def fake_propagation(monkeypatch: pytest.MonkeyPatch, *, shared: bool, slave: bool) -> None:
    monkeypatch.setattr(cs, "propagation_of",
                        lambda path: MountEntry("/", shared=shared, slave=slave))


def test_cri_mounts_basic(tmp_path: Path) -> None:
    out, prop = cri_mounts([mount(tmp_path, "/data"), mount(tmp_path, "/ro", readonly=True)], {})
    assert prop is None
    assert out == [
        {"destination": "/data", "type": "bind", "source": str(tmp_path), "options": ["rbind", "rprivate"]},
        {"destination": "/ro", "type": "bind", "source": str(tmp_path),
         "options": ["rbind", "rprivate", "ro"]},
    ]


def test_cri_mounts_recursive_read_only(tmp_path: Path) -> None:
    out, _ = cri_mounts([mount(tmp_path, "/rro", readonly=True, recursive_read_only=True)], {})
    assert out[0]["options"] == ["rbind", "rprivate", "rro"]
    with pytest.raises(InvalidArgument, match="readonly"):
        cri_mounts([mount(tmp_path, "/rro", recursive_read_only=True)], {})
    for prop in (P.PROPAGATION_HOST_TO_CONTAINER, P.PROPAGATION_BIDIRECTIONAL):
        with pytest.raises(InvalidArgument, match="private"):
            cri_mounts([mount(tmp_path, "/rro", readonly=True, recursive_read_only=True,
                              propagation=prop)], {})
    with pytest.raises(InvalidArgument, match="does not support"):
        cri_mounts([mount(tmp_path, "/rro", readonly=True, recursive_read_only=True)], {},
                   rro_supported=False)
    # Plain read-only mounts do not need the runtime's rro support.
    out, _ = cri_mounts([mount(tmp_path, "/ro", readonly=True)], {}, rro_supported=False)
    assert out[0]["options"] == ["rbind", "rprivate", "ro"]


def test_cri_mounts_missing_host_path(tmp_path: Path) -> None:
    # Bound as named (CreateContainer creates it first, see missing_host_paths); nothing is
    # created while the spec is made.
    out, _ = cri_mounts([mount(tmp_path / "missing", "/data")], {})
    assert out[0]["source"] == str(tmp_path / "missing")
    assert not (tmp_path / "missing").exists()
    with pytest.raises(InvalidArgument, match="empty host path"):
        cri_mounts([mount("", "/data")], {})


def test_missing_host_paths(tmp_path: Path) -> None:
    (tmp_path / "there").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "there")
    mounts = [mount(tmp_path / "there", "/a"), mount(tmp_path / "gone" / "deep", "/b"),
              mount(tmp_path / "link" / "sub", "/c"), mount(tmp_path / "there", "/d"),
              api_pb2.Mount(container_path="/img", readonly=True,
                            image=api_pb2.ImageSpec(image="busybox"))]
    # Through a symlinked parent, the path it resolves to.
    assert missing_host_paths(mounts) == [tmp_path / "gone" / "deep", tmp_path / "there" / "sub"]


def test_cri_mounts_symlinked_host_path_mounts_the_target(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.mkdir()
    (tmp_path / "link").symlink_to(target)
    out, _ = cri_mounts([mount(tmp_path / "link", "/data")], {})
    assert out[0]["source"] == str(target)
    # A symlink to nothing is not a path to create (CRI-O and containerd fail there too).
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(InvalidArgument, match="dangling symlink"):
        cri_mounts([mount(tmp_path / "dangling", "/data")], {})


@pytest.mark.parametrize("dest", ["data", "", "./data"])
def test_cri_mounts_relative_destination(tmp_path: Path, dest: str) -> None:
    with pytest.raises(InvalidArgument, match="absolute"):
        cri_mounts([mount(tmp_path, dest)], {})


@pytest.mark.parametrize("prop", [P.PROPAGATION_BIDIRECTIONAL, P.PROPAGATION_HOST_TO_CONTAINER])
def test_cri_mounts_propagation_on_a_private_host_mount(tmp_path: Path, prop: int) -> None:
    # The real host: tmp_path lives on /, which is private on these machines.
    entry = propagation_of(tmp_path)
    assert entry is not None and not entry.shared and not entry.slave, "precondition: private /"
    with pytest.raises(InvalidArgument, match="make-rshared"):
        cri_mounts([mount(tmp_path, "/data", propagation=prop)], {})


def test_cri_mounts_propagation_on_shared_and_slave_host_mounts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_propagation(monkeypatch, shared=True, slave=False)
    out, prop = cri_mounts([mount(tmp_path, "/b", propagation=P.PROPAGATION_BIDIRECTIONAL)], {})
    assert (out[0]["options"], prop) == (["rbind", "rshared"], "rshared")
    out, prop = cri_mounts([mount(tmp_path, "/h", propagation=P.PROPAGATION_HOST_TO_CONTAINER)], {})
    assert (out[0]["options"], prop) == (["rbind", "rslave"], "rslave")
    # rshared wins over rslave whichever comes first.
    both = [mount(tmp_path, "/h", propagation=P.PROPAGATION_HOST_TO_CONTAINER),
            mount(tmp_path, "/b", propagation=P.PROPAGATION_BIDIRECTIONAL),
            mount(tmp_path, "/p", readonly=True)]
    assert cri_mounts(both, {})[1] == "rshared"
    assert cri_mounts(list(reversed(both)), {})[1] == "rshared"

    fake_propagation(monkeypatch, shared=False, slave=True)
    out, prop = cri_mounts([mount(tmp_path, "/h", propagation=P.PROPAGATION_HOST_TO_CONTAINER,
                                  readonly=True)], {})
    assert (out[0]["options"], prop) == (["rbind", "rslave", "ro"], "rslave")
    with pytest.raises(InvalidArgument, match="shared mount"):
        cri_mounts([mount(tmp_path, "/b", propagation=P.PROPAGATION_BIDIRECTIONAL)], {})


def test_cri_mounts_image_volume(tmp_path: Path) -> None:
    image = api_pb2.ImageSpec(image="registry.local/data:1")
    out, _ = cri_mounts([api_pb2.Mount(container_path="/img", image=image, readonly=True)],
                        {"/img": tmp_path})
    assert out == [{"destination": "/img", "type": "bind", "source": str(tmp_path),
                    "options": ["rbind", "ro", "nosuid", "nodev", "rprivate"]}]
    with pytest.raises(InvalidArgument, match="read-only"):
        cri_mounts([api_pb2.Mount(container_path="/img", image=image)], {"/img": tmp_path})


# --- the whole spec --------------------------------------------------------------------------

def pod_sandbox(run_dir: Path, *, host_network: bool = False, host_ipc: bool = False,
                privileged: bool = False) -> Sandbox:
    meta = SandboxMeta(
        id="pod0123456789", name="k8s_POD_web_default_uid_0", runtime_handler="", created_at=1,
        run_dir=str(run_dir), netns_path="" if host_network else "/var/run/netns/pycri-pod0123",
        cgroup_parent="/kubepods/poduid", cgroup_created=True, hostname="web-0",
        shm_path="" if host_ipc else str(run_dir / "shm"), infra_id="infra0123",
    )
    config = api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(name="web", uid="uid", namespace="default"),
        linux=api_pb2.LinuxPodSandboxConfig(
            security_context=api_pb2.LinuxSandboxSecurityContext(privileged=privileged)),
    )
    return Sandbox(meta, config, SandboxStatus(SandboxState.READY, pid=1))


IDENTITY = Identity(uid=1000, gid=1000, additional_gids=(10, 20), username="app", home="/home/app")


def inputs(run_dir: Path, config: api_pb2.ContainerConfig, pod: Sandbox | None = None,
           **overrides: Any) -> SpecInputs:
    kwargs: dict[str, Any] = dict(
        ctr_id="ctr0123", pod=pod or pod_sandbox(run_dir), config=config,
        image=ImageConfig(entrypoint=("/bin/sh",), cmd=("-c", "sleep 1"), env=("IMG=1",),
                          working_dir="/srv"),
        identity=IDENTITY, rootfs=run_dir / "rootfs", cgroup_path="/kubepods/poduid/ctr0123",
        pid_ns_path=None, host_pid=False, image_mounts={}, cgroup_features=V1,
    )
    kwargs.update(overrides)
    return SpecInputs(**kwargs)


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    d = tmp_path / "run"
    d.mkdir()
    (d / "hostname").write_text("web-0\n")
    (d / "resolv.conf").write_text("nameserver 10.96.0.10\n")
    (d / "shm").mkdir()
    return d


def sc(**kwargs: Any) -> api_pb2.LinuxContainerConfig:
    return api_pb2.LinuxContainerConfig(
        security_context=api_pb2.LinuxContainerSecurityContext(**kwargs))


def by_dest(spec: Spec) -> dict[str, Spec]:
    out: dict[str, Spec] = {}
    for m in spec["mounts"]:
        assert m["destination"] not in out, f"{m['destination']} mounted twice"
        out[m["destination"]] = m
    return out


def namespaces(spec: Spec) -> dict[str, str | None]:
    return {ns["type"]: ns.get("path") for ns in spec["linux"]["namespaces"]}


def test_spec_process(run_dir: Path) -> None:
    config = cfg(envs=envs(A="b"), tty=True,
                 linux=api_pb2.LinuxContainerConfig(
                     resources=api_pb2.LinuxContainerResources(oom_score_adj=500),
                     security_context=api_pb2.LinuxContainerSecurityContext(no_new_privs=True)))
    spec = container_spec(inputs(run_dir, config))
    proc = spec["process"]
    assert proc["args"] == ["/bin/sh", "-c", "sleep 1"]
    assert as_dict(proc["env"]) == {"IMG": "1", "A": "b", "PATH": DEFAULT_PATH_ENV.split("=", 1)[1],
                                    "HOSTNAME": "web-0", "HOME": "/home/app"}
    assert proc["cwd"] == "/srv"
    assert proc["terminal"] is True and proc["noNewPrivileges"] is True
    assert proc["user"] == {"uid": 1000, "gid": 1000, "additionalGids": [10, 20], "username": "app"}
    assert proc["oomScoreAdj"] == 500
    assert "CAP_CHOWN" in proc["capabilities"]["bounding"]
    assert proc["capabilities"]["inheritable"] == [] and proc["capabilities"]["ambient"] == []
    assert spec["root"] == {"path": str(run_dir / "rootfs"), "readonly": False}
    assert spec["linux"]["cgroupsPath"] == "/kubepods/poduid/ctr0123"


def test_spec_user_without_name_or_groups(run_dir: Path) -> None:
    ident = Identity(uid=0, gid=0, additional_gids=(), username="", home="/")
    spec = container_spec(inputs(run_dir, cfg(), identity=ident))
    assert spec["process"]["user"] == {"uid": 0, "gid": 0}


def test_spec_namespaces_join_the_infra(run_dir: Path) -> None:
    spec = container_spec(inputs(run_dir, cfg()))
    assert namespaces(spec) == {"mount": None, "network": "/proc/1/ns/net", "ipc": "/proc/1/ns/ipc",
                                "uts": "/proc/1/ns/uts", "pid": None}


def test_spec_namespaces_host_network_and_ipc(run_dir: Path) -> None:
    pod = pod_sandbox(run_dir, host_network=True, host_ipc=True)
    spec = container_spec(inputs(run_dir, cfg(), pod=pod))
    assert namespaces(spec) == {"mount": None, "pid": None}
    mounts = by_dest(spec)
    assert mounts["/dev/shm"]["source"] == "/dev/shm"  # the host's
    assert "/dev/mqueue" not in mounts


def test_spec_namespaces_pid(run_dir: Path) -> None:
    spec = container_spec(inputs(run_dir, cfg(), pid_ns_path="/proc/1/ns/pid"))
    assert namespaces(spec)["pid"] == "/proc/1/ns/pid"
    spec = container_spec(inputs(run_dir, cfg(), host_pid=True))
    assert "pid" not in namespaces(spec)


def test_spec_default_mounts(run_dir: Path) -> None:
    mounts = by_dest(container_spec(inputs(run_dir, cfg())))
    assert mounts["/proc"]["type"] == "proc"
    assert mounts["/dev"]["type"] == "tmpfs"
    assert mounts["/dev/pts"]["type"] == "devpts"
    assert mounts["/dev/mqueue"]["type"] == "mqueue"
    assert mounts["/sys"]["type"] == "sysfs" and "ro" in mounts["/sys"]["options"]
    cg = mounts["/sys/fs/cgroup"]
    assert cg["type"] == "cgroup" and "ro" in cg["options"] and "rw" not in cg["options"]
    assert mounts["/dev/shm"]["source"] == str(run_dir / "shm")
    assert mounts["/etc/hostname"]["source"] == str(run_dir / "hostname")
    assert mounts["/etc/resolv.conf"]["source"] == str(run_dir / "resolv.conf")
    assert "ro" not in mounts["/etc/resolv.conf"]["options"]


def test_spec_pod_files_only_when_they_exist(run_dir: Path) -> None:
    (run_dir / "resolv.conf").unlink()
    mounts = by_dest(container_spec(inputs(run_dir, cfg())))
    assert "/etc/resolv.conf" not in mounts and "/etc/hostname" in mounts


def test_spec_readonly_rootfs(run_dir: Path) -> None:
    spec = container_spec(inputs(run_dir, cfg(linux=sc(readonly_rootfs=True))))
    assert spec["root"]["readonly"] is True
    assert "ro" in by_dest(spec)["/etc/hostname"]["options"]


def test_spec_cri_mount_replaces_a_default(run_dir: Path, tmp_path: Path) -> None:
    mine = tmp_path / "my-resolv.conf"
    mine.write_text("nameserver 1.1.1.1\n")
    spec = container_spec(inputs(run_dir, cfg(mounts=[mount(mine, "/etc/resolv.conf", readonly=True)])))
    mounts = by_dest(spec)  # also checks it is there once
    assert mounts["/etc/resolv.conf"]["source"] == str(mine)
    assert "ro" in mounts["/etc/resolv.conf"]["options"]
    # A non-normalised spelling of the same destination still replaces the default.
    spec = container_spec(inputs(run_dir, cfg(mounts=[mount(mine, "/etc//resolv.conf/")])))
    resolv = [m for m in spec["mounts"] if os.path.normpath(m["destination"]) == "/etc/resolv.conf"]
    assert [m["source"] for m in resolv] == [str(mine)]


def test_spec_mounts_are_sorted_parents_first(run_dir: Path, tmp_path: Path) -> None:
    config = cfg(mounts=[mount(tmp_path, "/a/b/c"), mount(tmp_path, "/a"), mount(tmp_path, "/a/b"),
                         mount(tmp_path, "/dev/shm/x")])
    dests = [m["destination"] for m in container_spec(inputs(run_dir, config))["mounts"]]
    for i, d in enumerate(dests):
        for parent in dests[i + 1:]:
            assert not d.startswith(parent.rstrip("/") + "/"), f"{d} before its parent {parent}"
    assert dests.index("/a") < dests.index("/a/b") < dests.index("/a/b/c")
    assert dests.index("/dev") < dests.index("/dev/shm") < dests.index("/dev/shm/x")


def test_spec_rootfs_propagation(run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "rootfsPropagation" not in container_spec(inputs(run_dir, cfg()))["linux"]
    fake_propagation(monkeypatch, shared=True, slave=False)
    config = cfg(mounts=[mount(tmp_path, "/b", propagation=P.PROPAGATION_BIDIRECTIONAL)])
    assert container_spec(inputs(run_dir, config))["linux"]["rootfsPropagation"] == "rshared"


def test_spec_confined_by_default(run_dir: Path) -> None:
    spec = container_spec(inputs(run_dir, cfg(linux=sc(
        seccomp=api_pb2.SecurityProfile(profile_type=PROFILE.RuntimeDefault),
        masked_paths=["/proc/extra"], readonly_paths=["/proc/extra-ro"]))))
    linux = spec["linux"]
    assert set(linux["maskedPaths"]) == {*MASKED_PATHS, "/proc/extra"}
    assert set(linux["readonlyPaths"]) == {*READONLY_PATHS, "/proc/extra-ro"}
    assert linux["seccomp"]["defaultAction"] == "SCMP_ACT_ERRNO"
    assert linux["seccomp"]["syscalls"]
    rules = linux["resources"]["devices"]
    assert rules[0] == {"allow": False, "access": "rwm"}
    assert {"allow": True, "access": "rwm"} not in rules
    assert linux["devices"] == []


def test_spec_seccomp_unconfined(run_dir: Path) -> None:
    for sc_kwargs in ({"seccomp": api_pb2.SecurityProfile(profile_type=PROFILE.Unconfined)},
                      {}, {"seccomp_profile_path": "unconfined"}):
        spec = container_spec(inputs(run_dir, cfg(linux=sc(**sc_kwargs))))
        assert "seccomp" not in spec["linux"], sc_kwargs
    spec = container_spec(inputs(run_dir, cfg(linux=sc(seccomp_profile_path="runtime/default"))))
    assert "seccomp" in spec["linux"]


def test_spec_seccomp_localhost_missing_file(run_dir: Path, tmp_path: Path) -> None:
    profile = api_pb2.SecurityProfile(profile_type=PROFILE.Localhost,
                                      localhost_ref=str(tmp_path / "missing.json"))
    with pytest.raises(InvalidArgument):
        container_spec(inputs(run_dir, cfg(linux=sc(seccomp=profile))))


def test_spec_privileged_needs_a_privileged_pod(run_dir: Path) -> None:
    with pytest.raises(InvalidArgument, match="privileged pod"):
        container_spec(inputs(run_dir, cfg(linux=sc(privileged=True))))


def test_spec_privileged(run_dir: Path) -> None:
    pod = pod_sandbox(run_dir, privileged=True)
    spec = container_spec(inputs(run_dir, cfg(linux=sc(
        privileged=True, seccomp=api_pb2.SecurityProfile(profile_type=PROFILE.RuntimeDefault))), pod=pod))
    linux = spec["linux"]
    assert "maskedPaths" not in linux and "readonlyPaths" not in linux and "seccomp" not in linux
    mounts = by_dest(spec)
    assert "ro" not in mounts["/sys"]["options"]
    assert "rw" in mounts["/sys/fs/cgroup"]["options"] and "ro" not in mounts["/sys/fs/cgroup"]["options"]
    assert linux["resources"]["devices"] == [{"allow": True, "access": "rwm"}]
    paths = {d["path"] for d in linux["devices"]}
    assert "/dev/null" in paths
    assert not any(p.startswith("/dev/pts/") or p == "/dev/console" for p in paths)
    # Every capability the daemon holds, and no more.
    assert set(spec["process"]["capabilities"]["bounding"]) == set(bounding_set())


def test_spec_privileged_without_host_devices(run_dir: Path) -> None:
    """A handler with privileged_without_host_devices: still privileged, but none of the
    host's devices and the default device rules; a device asked for is still given."""
    pod = pod_sandbox(run_dir, privileged=True)
    null = api_pb2.Device(host_path="/dev/null", container_path="/dev/mynull")
    spec = container_spec(inputs(run_dir, cfg(linux=sc(privileged=True), devices=[null]),
                                 pod=pod, host_devices=False))
    assert [d["path"] for d in spec["linux"]["devices"]] == ["/dev/mynull"]
    rules = spec["linux"]["resources"]["devices"]
    assert {"allow": True, "access": "rwm"} not in rules
    assert rules[0] == {"allow": False, "access": "rwm"}
    assert "maskedPaths" not in spec["linux"]  # privileged otherwise


def test_spec_unprivileged_container_in_a_privileged_pod_stays_confined(run_dir: Path) -> None:
    pod = pod_sandbox(run_dir, privileged=True)
    spec = container_spec(inputs(run_dir, cfg(), pod=pod))
    assert "maskedPaths" in spec["linux"]
    assert "ro" in by_dest(spec)["/sys"]["options"]


def test_spec_capabilities(run_dir: Path) -> None:
    caps = api_pb2.Capability(add_capabilities=["NET_ADMIN"], drop_capabilities=["CHOWN"])
    bounding = container_spec(inputs(run_dir, cfg(linux=sc(capabilities=caps))))[
        "process"]["capabilities"]["bounding"]
    assert "CAP_NET_ADMIN" in bounding and "CAP_CHOWN" not in bounding
    for bad in (api_pb2.Capability(add_capabilities=["NOT_A_CAP"]),
                api_pb2.Capability(drop_capabilities=["CAP_BOGUS"])):
        with pytest.raises(InvalidArgument, match="unknown capability"):
            container_spec(inputs(run_dir, cfg(linux=sc(capabilities=bad))))


def test_spec_devices(run_dir: Path, tmp_path: Path) -> None:
    config = cfg(devices=[api_pb2.Device(host_path="/dev/null", container_path="/dev/xnull",
                                         permissions="rw")])
    linux = container_spec(inputs(run_dir, config))["linux"]
    assert [(d["path"], d["type"], d["major"], d["minor"]) for d in linux["devices"]] == [
        ("/dev/xnull", "c", 1, 3)]
    assert linux["resources"]["devices"][-1] == {"allow": True, "type": "c", "major": 1, "minor": 3,
                                                 "access": "rw"}
    regular = tmp_path / "regular"
    regular.write_text("")
    for dev in (api_pb2.Device(host_path=str(regular), container_path="/dev/x"),
                api_pb2.Device(host_path="/dev/null", container_path="/dev/x", permissions="rwx")):
        with pytest.raises(InvalidArgument):
            container_spec(inputs(run_dir, cfg(devices=[dev])))


def test_spec_resources_follow_the_host_cgroup_version(run_dir: Path) -> None:
    config = cfg(linux=api_pb2.LinuxContainerConfig(
        resources=api_pb2.LinuxContainerResources(memory_limit_in_bytes=1 << 30)))
    v1 = container_spec(inputs(run_dir, config, cgroup_features=V1))["linux"]["resources"]
    v2 = container_spec(inputs(run_dir, config, cgroup_features=V2))["linux"]["resources"]
    assert v1["memory"] == {"limit": 1 << 30, "swap": 1 << 30, "swappiness": 0}
    assert v2["memory"] == {"limit": 1 << 30, "swap": 1 << 30}


def test_spec_annotations(run_dir: Path) -> None:
    config = cfg(annotations={"mine": "1", "io.kubernetes.cri.sandbox-id": "spoofed"})
    ann = container_spec(inputs(run_dir, config))["annotations"]
    assert ann["mine"] == "1"
    assert ann["io.kubernetes.cri.container-type"] == "container"
    assert ann["io.kubernetes.cri.container-name"] == "app"
    assert ann["io.kubernetes.cri.sandbox-id"] == "pod0123456789"


def test_spec_pod_annotations_the_handler_lets_in(run_dir: Path) -> None:
    config = cfg(annotations={"shared": "container"})
    ann = container_spec(inputs(run_dir, config, pod_annotations={
        "io.katacontainers.x": "1", "shared": "pod",
        "io.kubernetes.cri.sandbox-id": "spoofed"}))["annotations"]
    assert ann["io.katacontainers.x"] == "1"
    assert ann["shared"] == "container"  # the container's own wins
    assert ann["io.kubernetes.cri.sandbox-id"] == "pod0123456789"


def test_spec_bad_inputs_are_refused_before_anything_else(run_dir: Path) -> None:
    for config in (cfg(working_dir="/proc/self/fd/3"),
                   cfg(envs=[api_pb2.KeyValue(key="A", value=b"\x00")]),
                   cfg(mounts=[mount(run_dir, "relative")]),
                   cfg(linux=api_pb2.LinuxContainerConfig(
                       resources=api_pb2.LinuxContainerResources(memory_limit_in_bytes=-5)))):
        with pytest.raises(InvalidArgument):
            container_spec(inputs(run_dir, config))
    with pytest.raises(InvalidArgument, match="no command"):
        container_spec(inputs(run_dir, cfg(), image=ImageConfig()))


def test_pids_limit_only_when_configured(run_dir: Path) -> None:
    config = api_pb2.ContainerConfig(metadata=api_pb2.ContainerMetadata(name="c"))
    assert "pids" not in container_spec(inputs(run_dir, config))["linux"]["resources"]
    spec = container_spec(inputs(run_dir, config, pids_limit=1024))
    assert spec["linux"]["resources"]["pids"] == {"limit": 1024}
    # Without a pids controller (a v1 host that does not mount it) runc would fail the create.
    spec = container_spec(inputs(run_dir, config, pids_limit=1024,
                                 cgroup_features=without(V1, "pids")))
    assert "pids" not in spec["linux"]["resources"]


def test_spec_apparmor_profile_goes_to_the_process(run_dir: Path) -> None:
    spec = container_spec(inputs(run_dir, cfg(), apparmor_profile="pycri-default"))
    assert spec["process"]["apparmorProfile"] == "pycri-default"
    assert "apparmorProfile" not in container_spec(inputs(run_dir, cfg()))["process"]


def test_cdi_edits_come_last_and_win(run_dir: Path) -> None:
    from sandbox.cdi.inject import Injection

    config = cfg(envs=envs(A="mine"))
    inj = Injection(names=("example.com/dev=x",), env=("A=vendor", "B=1"),
                    devices=(({"path": "/dev/x", "type": "c", "major": 1, "minor": 3}, "rw"),),
                    mounts=({"destination": "/etc/hostname", "source": "/srv/h", "options": ["bind"]},),
                    hooks=(("createContainer", {"path": "/bin/hook"}),))
    spec = container_spec(inputs(run_dir, config, cdi=inj))
    env = as_dict(spec["process"]["env"])
    assert (env["A"], env["B"]) == ("vendor", "1")
    (dev,) = [d for d in spec["linux"]["devices"] if d["path"] == "/dev/x"]
    assert (dev["type"], dev["major"], dev["minor"]) == ("c", 1, 3)
    assert spec["linux"]["resources"]["devices"][-1] == {
        "allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"}
    assert by_dest(spec)["/etc/hostname"]["source"] == "/srv/h"
    assert spec["hooks"] == {"createContainer": [{"path": "/bin/hook"}]}
    assert "hooks" not in container_spec(inputs(run_dir, config))
