from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest

from cri import cli, config


def test_rendered_default_config_parses_back_to_the_defaults(tmp_path: Path) -> None:
    text = config.render()
    assert tomllib.loads(text)  # valid TOML
    for key in ("root", "runroot", "log_level", "listen", "stream_address", "stream_port",
                "runtime_path", "conmon_path", "cgroup_driver", "default_sysctls", "apparmor_profile",
                "pause_image", "registries_conf", "conf_dir", "plugin_dirs", "enable",
                "socket_path", "plugin_path", "plugin_config_path", "plugin_registration_timeout",
                "plugin_request_timeout", "spec_dirs", "enable_metrics", "metrics_host",
                "metrics_port", "metrics_cert", "metrics_key"):
        assert f"\n{key} = " in text, key
    path = tmp_path / "pycri.conf"
    path.write_text(text)
    assert config.load(path) == config.PycriConfig()


def test_defaults_work_on_a_fresh_machine() -> None:
    cfg = config.PycriConfig()
    assert cfg.network.conf_dir == "/etc/cni/net.d"
    assert cfg.network.plugin_dirs == ["/opt/cni/bin", "/usr/lib/cni"]
    assert cfg.socket_path == Path("/run/pycri/pycri.sock")
    assert cfg.runtime.cgroup_driver == "cgroupfs"
    # NRI as containerd and CRI-O serve it by default, at the socket and paths plugins expect.
    assert (cfg.nri.enable, cfg.nri.socket_path, cfg.nri.plugin_path,
            cfg.nri.plugin_config_path) == (True, "/var/run/nri/nri.sock", "/opt/nri/plugins",
                                            "/etc/nri/conf.d")
    assert (cfg.nri.plugin_registration_timeout, cfg.nri.plugin_request_timeout) == (5.0, 2.0)
    # CDI specs where device drivers write them (static, then run-time ones overriding).
    assert cfg.cdi.spec_dirs == ["/etc/cdi", "/var/run/cdi"]
    # Metrics as CRI-O's: off, and once on, loopback port 9090 over plain HTTP.
    assert (cfg.metrics.enable_metrics, cfg.metrics.metrics_host, cfg.metrics.metrics_port,
            cfg.metrics.metrics_cert, cfg.metrics.metrics_key) == (False, "127.0.0.1", 9090, "", "")


def test_dropins_apply_in_name_order_and_flags_win(tmp_path: Path) -> None:
    path = tmp_path / "pycri.conf"
    path.write_text('[pycri]\nlog_level = "debug"\n[pycri.network]\nconf_dir = "/a"\n')
    dropins = tmp_path / "pycri.conf.d"
    dropins.mkdir()
    (dropins / "20-b.conf").write_text('[pycri.network]\nconf_dir = "/b"\n')
    (dropins / "10-a.conf").write_text('[pycri.network]\nconf_dir = "/x"\nplugin_dirs = ["/p"]\n')
    cfg = config.load(path)
    assert (cfg.log_level, cfg.network.conf_dir, cfg.network.plugin_dirs) == ("debug", "/b", ["/p"])
    cfg = config.load(path, {"pycri.network.conf_dir": "/flag", "pycri.log_level": "error"})
    assert (cfg.network.conf_dir, cfg.log_level) == ("/flag", "error")


@pytest.mark.parametrize(
    "text,key",
    [
        ('[pycri]\nbogus = 1\n', "pycri.bogus"),
        ('[pycri.api]\nstream_port = "x"\n', "pycri.api.stream_port"),
        ('[pycri.api]\nstream_port = 70000\n', "pycri.api.stream_port"),
        ('[pycri.api]\nsocket_mode = "0666"\n', "pycri.api.socket_mode"),
        ('[pycri.api]\nlisten = "/run/x.sock"\nsocket_group = "ops"\n', "pycri.api.socket_group"),
        ('[pycri.api]\nstream_idle_timeout = 0\n', "pycri.api.stream_idle_timeout"),
        ('[pycri.api]\nstream_token_ttl = -1.5\n', "pycri.api.stream_token_ttl"),
        ('[pycri.api]\nstream_tls_cert = "/etc/pycri/cert.pem"\n', "pycri.api.stream_tls_key"),
        ('[pycri.api]\nstream_tls_cert = "c.pem"\nstream_tls_key = "/k.pem"\n',
         "pycri.api.stream_tls_cert"),
        ('[pycri]\nlog_level = "loud"\n', "pycri.log_level"),
        ('[pycri.runtime]\ncgroup_driver = "cgroupv2"\n', "pycri.runtime.cgroup_driver"),
        ('[pycri.runtime]\ncgroup_driver = "systemd"\ndefault_cgroup_parent = "/pycri"\n',
         "pycri.runtime.default_cgroup_parent"),
        ('[pycri.runtime]\ndefault_cgroup_parent = "pycri.slice"\n',
         "pycri.runtime.default_cgroup_parent"),
        ('[pycri.runtime]\ncgroup_driver = "systemd"\nconmon_cgroup = "/pycri-conmon"\n',
         "pycri.runtime.conmon_cgroup"),
        ('[pycri.network]\nplugin_dirs = "/x"\n', "pycri.network.plugin_dirs"),
        ('[pycri.runtime]\ndefault_sysctls = ["novalue"]\n', "pycri.runtime.default_sysctls"),
        ('[pycri.runtime]\npids_limit = -1\n', "pycri.runtime.pids_limit"),
        ('[pycri.runtime]\nhooks_dir = ["hooks.d"]\n', "pycri.runtime.hooks_dir"),
        ('[pycri.runtime]\nhooks_dir = "/etc/containers/oci/hooks.d"\n',
         "pycri.runtime.hooks_dir"),
        ('[pycri.runtime]\nconmon_cgroup = "conmon"\n', "pycri.runtime.conmon_cgroup"),
        ('[pycri.runtime]\napparmor_profile = ""\n', "pycri.runtime.apparmor_profile"),
        ('[pycri.runtime]\napparmor_profile = "my profile"\n', "pycri.runtime.apparmor_profile"),
        ('[pycri.network]\nmasquerade_cidrs = ["10.85.0.1/16"]\n',
         "pycri.network.masquerade_cidrs"),
        ('[pycri.network]\nmasquerade_cidrs = ["pods"]\n', "pycri.network.masquerade_cidrs"),
        ('[pycri.nri]\nenable = "yes"\n', "pycri.nri.enable"),
        ('[pycri.nri]\nsocket_path = "nri.sock"\n', "pycri.nri.socket_path"),
        ('[pycri.nri]\nplugin_request_timeout = 0\n', "pycri.nri.plugin_request_timeout"),
        ('[pycri.cdi]\nspec_dirs = ["/etc/cdi", "cdi"]\n', "pycri.cdi.spec_dirs"),
        ('[pycri.cdi]\nspec_dirs = "/etc/cdi"\n', "pycri.cdi.spec_dirs"),
        ('[pycri.metrics]\nenable_metrics = 1\n', "pycri.metrics.enable_metrics"),
        ('[pycri.metrics]\nmetrics_port = 65536\n', "pycri.metrics.metrics_port"),
        ('[pycri.metrics]\nmetrics_host = ""\n', "pycri.metrics.metrics_host"),
        ('[pycri.metrics]\nmetrics_cert = "/etc/pycri/metrics.pem"\n', "pycri.metrics.metrics_key"),
        ('[pycri.metrics]\nmetrics_key = "/etc/pycri/metrics.key"\n', "pycri.metrics.metrics_cert"),
        ('[pycri.metrics]\nmetrics_cert = "m.pem"\nmetrics_key = "/k.pem"\n',
         "pycri.metrics.metrics_cert"),
        ('[other]\nx = 1\n', "other"),
    ],
)
def test_invalid_config_names_the_key(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "bad.conf"
    path.write_text(text)
    with pytest.raises(config.ConfigError, match=key.replace(".", r"\.")):
        config.load(path)


def test_cli_exits_2_on_invalid_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.conf"
    path.write_text("[pycri]\nlog_level = 3\n")
    assert cli.main(["config", "--config", str(path)]) == cli.EXIT_CONFIG
    assert "pycri.log_level" in capsys.readouterr().err
    assert cli.main(["config", "--config", str(tmp_path / "missing.conf")]) == cli.EXIT_CONFIG


@pytest.mark.skipif(os.geteuid() != 0, reason="the daemon runs as root")
def test_serve_exits_2_on_a_conmon_cgroup_it_cannot_use(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "pycri.conf"
    path.write_text(f'[pycri]\nroot = "{tmp_path}/root"\nrunroot = "{tmp_path}/run"\n'
                    f'[pycri.api]\nlisten = "{tmp_path}/run/pycri.sock"\n'
                    '[pycri.runtime]\nconmon_cgroup = "/pycri/../conmon"\n')
    assert cli.main(["serve", "--config", str(path)]) == cli.EXIT_CONFIG
    err = capsys.readouterr().err
    assert "pycri.runtime.conmon_cgroup" in err and "'..'" in err, err
    assert not (tmp_path / "run" / "pycri.sock").exists()


def test_cli_config_prints_effective_config(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["config"]) == 0
    assert tomllib.loads(capsys.readouterr().out)["pycri"]["api"]["listen"] == (
        "/run/pycri/pycri.sock")


def test_pycri_config_documents_hooks_dir_with_its_default(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["config"]) == 0
    out = capsys.readouterr().out
    assert tomllib.loads(out)["pycri"]["runtime"]["hooks_dir"] == [
        "/usr/share/containers/oci/hooks.d", "/etc/containers/oci/hooks.d"]
    doc = out[:out.index("\nhooks_dir = ")].rsplit("\n", 1)[1]
    assert "oci-hooks(5)" in doc and "masks" in doc, doc


def test_socket_group_by_name_or_gid() -> None:
    api = config.APIConfig()
    assert config.socket_gid(api) is None
    api.socket_group = "0"
    assert config.socket_gid(api) == 0
    api.socket_group = "root"  # every host has it
    assert config.socket_gid(api) == 0
    api.socket_group = "no-such-group-here"
    with pytest.raises(config.ConfigError, match=r"pycri\.api\.socket_group: no group"):
        config.socket_gid(api)
