"""RuntimeClass handlers: [pycri.runtime.handlers.NAME] tables as the daemon reads them, which
handler a RunPodSandbox gets, and what Status reports."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import grpc
import pytest

from cri import config
from cri.api import api_pb2
from cri.errors import InvalidArgument
from cri.runtime import runtime_status, sandbox_run
from cri.runtime.daemon import Runtime
from cri.store.container import ContainerMeta
from cri.store.sandbox import SandboxMeta

KATA = """
[pycri.runtime.handlers.kata]
runtime_path = "/opt/kata/bin/kata-runtime"
monitor_path = "/opt/kata/bin/conmon"
allowed_annotations = ["io.katacontainers.*", "example.com/exact"]
privileged_without_host_devices = true
"""


def _load(tmp_path: Path, text: str) -> config.PycriConfig:
    path = tmp_path / "pycri.conf"
    path.write_text(f'[pycri]\nroot = "{tmp_path}/root"\nrunroot = "{tmp_path}/run"\n{text}')
    return config.load(path)


def test_runc_is_the_default_handler_with_today_s_paths(tmp_path: Path) -> None:
    cfg = _load(tmp_path, "")
    assert cfg.runtime.default_handler() == "runc" and list(cfg.runtime.handlers) == ["runc"]
    runc = cfg.runtime.handler("runc", cfg.runroot)
    # The runtime state of pods made before handlers were configurable stays where it was.
    assert (runc.runtime_path, runc.runtime_root, runc.monitor_path) == (
        "runc", f"{tmp_path}/run/runc", "conmon")
    assert _load(tmp_path, '[pycri.runtime]\ndefault_runtime = ""\n').runtime.default_handler() \
        == "runc"


def test_a_handler_table_adds_to_runc_and_fills_its_empty_keys(tmp_path: Path) -> None:
    cfg = _load(tmp_path, KATA + '[pycri.runtime.handlers.crun]\n')
    assert sorted(cfg.runtime.handlers) == ["crun", "kata", "runc"]
    kata = cfg.runtime.handler("kata", cfg.runroot)
    assert (kata.runtime_path, kata.runtime_root, kata.monitor_path) == (
        "/opt/kata/bin/kata-runtime", f"{tmp_path}/run/kata", "/opt/kata/bin/conmon")
    assert kata.privileged_without_host_devices
    crun = cfg.runtime.handler("crun", cfg.runroot)
    assert (crun.runtime_path, crun.monitor_path) == ("crun", "conmon")  # its name, in PATH


def test_a_drop_in_amends_a_handler_and_may_make_it_the_default(tmp_path: Path) -> None:
    path = tmp_path / "pycri.conf"
    path.write_text(KATA)
    (tmp_path / "pycri.conf.d").mkdir()
    (tmp_path / "pycri.conf.d" / "10.conf").write_text(
        '[pycri.runtime]\ndefault_runtime = "kata"\n'
        '[pycri.runtime.handlers.kata]\nruntime_root = "/run/kata-state"\n')
    cfg = config.load(path)
    kata = cfg.runtime.handlers["kata"]
    assert (kata.runtime_path, kata.runtime_root) == ("/opt/kata/bin/kata-runtime",
                                                      "/run/kata-state")
    assert cfg.runtime.default_handler() == "kata"


def test_the_rendered_config_documents_every_handler_key_and_parses_back(
        tmp_path: Path) -> None:
    cfg = _load(tmp_path, KATA)
    text = config.render(cfg)
    assert "[pycri.runtime.handlers.runc]" in text and "[pycri.runtime.handlers.kata]" in text
    assert "# [pycri.runtime.handlers.NAME]: RuntimeClass handlers" in text
    for key in ("default_runtime", "runtime_path", "runtime_root", "monitor_path",
                "allowed_annotations", "privileged_without_host_devices"):
        assert f"\n{key} = " in text, key
    path = tmp_path / "rendered.conf"
    path.write_text(text)
    assert config.load(path) == cfg


@pytest.mark.parametrize("text,key", [
    ('[pycri.runtime]\ndefault_runtime = "kata"\n', "pycri.runtime.default_runtime"),
    ("[pycri.runtime.handlers.Kata]\n", "pycri.runtime.handlers.Kata"),
    ("[pycri.runtime.handlers.a_b]\n", "pycri.runtime.handlers.a_b"),
    ("[pycri.runtime.handlers.exits]\n", "pycri.runtime.handlers.exits.runtime_root"),
    ('[pycri.runtime.handlers.x]\nruntime_root = "state"\n',
     "pycri.runtime.handlers.x.runtime_root"),
    ('[pycri.runtime.handlers.x]\nallowed_annotations = ["a*b"]\n',
     "pycri.runtime.handlers.x.allowed_annotations"),
    ('[pycri.runtime.handlers.x]\nruntime_path = 1\n', "pycri.runtime.handlers.x.runtime_path"),
    ('[pycri.runtime.handlers.x]\nbogus = "1"\n', "pycri.runtime.handlers.x.bogus"),
    ('[pycri.runtime]\nhandlers = "runc"\n', "pycri.runtime.handlers"),
    ('[pycri.runtime]\nruntime_path = "runc"\n', "pycri.runtime.runtime_path"),
])
def test_invalid_handler_config_names_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(config.ConfigError, match=key.replace(".", r"\.")):
        _load(tmp_path, text)


def test_prepare_looks_up_every_handler_s_binaries(tmp_path: Path) -> None:
    cfg = _load(tmp_path, '[pycri.runtime.handlers.gone]\nruntime_path = "/no/such/runtime"\n')
    with pytest.raises(config.ConfigError, match=r"pycri\.runtime\.handlers\.gone\.runtime_path"):
        config.prepare(cfg)


@pytest.fixture
def rt(tmp_path: Path) -> Runtime:
    return Runtime(_load(tmp_path, KATA))


def test_runtime_handler_picks_the_handler(rt: Runtime) -> None:
    assert rt.handlers.resolve("").name == "runc"
    assert rt.handlers.resolve("runc").name == "runc"
    kata = rt.handlers.resolve("kata")
    assert kata.oci.runtime_path == Path("/opt/kata/bin/kata-runtime")
    assert kata.oci.conmon_path == Path("/opt/kata/bin/conmon")
    assert kata.oci.runtime_root == Path(rt.config.runroot) / "kata"
    assert rt.oci("kata") is kata.oci and rt.oci("runc") is not kata.oci


def test_an_unknown_handler_is_invalid_argument_naming_the_configured_ones(
        rt: Runtime) -> None:
    with pytest.raises(InvalidArgument) as err:
        rt.handlers.resolve("gvisor")
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "'gvisor'" in err.value.message and "runc, kata" in err.value.message


def test_run_pod_sandbox_refuses_an_unknown_handler_before_making_anything(
        rt: Runtime) -> None:
    pod = api_pb2.PodSandboxConfig(metadata=api_pb2.PodSandboxMetadata(
        name="p", namespace="ns", uid="u"))
    with pytest.raises(InvalidArgument, match="gvisor"):
        asyncio.run(sandbox_run.run_pod_sandbox(rt, pod, "gvisor"))
    assert not (Path(rt.config.root) / "sandboxes").exists()
    rt.sandboxes.names.reserve(sandbox_run.sandbox_name(pod.metadata), "x")  # not left reserved


def test_only_allowed_pod_annotations_reach_the_specs(rt: Runtime) -> None:
    pod = {"io.katacontainers.config.hypervisor.kernel": "k", "example.com/exact": "1",
           "example.com/exact-not": "2", "other": "3"}
    assert rt.handlers.of("kata").pod_annotations(pod) == {
        "io.katacontainers.config.hypervisor.kernel": "k", "example.com/exact": "1"}
    assert rt.handlers.of("runc").pod_annotations(pod) == {}


def test_status_reports_each_handler_and_the_default_as_empty(rt: Runtime) -> None:
    rt.handlers.of("runc").mount_options = frozenset({"rro", "ro"})
    got = [(h.name, h.features.recursive_read_only_mounts, h.features.user_namespaces)
           for h in runtime_status.handlers(rt)]
    assert got == [("", True, False), ("runc", True, False), ("kata", False, False)]


def test_status_verbose_describes_the_handlers(rt: Runtime, tmp_path: Path) -> None:
    resp = runtime_status.status(rt, verbose=True)
    info = json.loads(resp.info["config"])
    assert info["defaultRuntime"] == "runc"
    assert info["runtimeHandlers"]["kata"]["runtimePath"] == "/opt/kata/bin/kata-runtime"
    assert info["runtimeHandlers"]["runc"]["runtimeRoot"] == f"{tmp_path}/run/runc"


def test_state_from_before_handlers_reads_as_runc() -> None:
    assert SandboxMeta(id="p", name="n", runtime_handler="", created_at=0, run_dir="/r",
                       netns_path="", cgroup_parent="/c", cgroup_created=True, hostname="h",
                       shm_path="", infra_id="p").handler == "runc"
    assert ContainerMeta(id="c", name="n", pod_id="p", created_at=0, image="i", image_id="i",
                         image_ref="i", chain_ids=[], log_path="", cgroup_path="/c",
                         stop_signal=15, uid=0, gid=0, additional_gids=[], username="",
                         pid_namespace="pod").handler == "runc"


def test_a_daemon_without_a_handler_its_pods_use_refuses_to_start(rt: Runtime) -> None:
    rt.handlers.check_recorded({"runc", "kata"})
    with pytest.raises(config.ConfigError, match="gvisor"):
        rt.handlers.check_recorded({"runc", "gvisor"})
