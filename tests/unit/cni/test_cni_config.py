from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cni.config import fingerprint, load_dir, load_file, parse_conflist
from cni.errors import CNIConfigError
from cri import config as pycri_config

GOOD = {"cniVersion": "1.0.0", "name": "net-b", "plugins": [{"type": "bridge"}, {"type": "portmap"}]}


def test_missing_dir_is_empty_and_fingerprintable(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    loaded = load_dir(missing)
    assert loaded.config is None and loaded.reasons == []
    assert fingerprint(missing) == fingerprint(missing)


def test_first_valid_file_in_name_order_with_reasons(tmp_path: Path) -> None:
    (tmp_path / "00-broken.conflist").write_text("{not json")
    (tmp_path / "05-noplugins.conflist").write_text(json.dumps({"cniVersion": "1.0.0", "name": "x"}))
    (tmp_path / "07-notype.conflist").write_text(json.dumps(
        {"cniVersion": "1.0.0", "name": "x", "plugins": [{"bridge": "b"}]}))
    (tmp_path / "08-badname.conflist").write_text(json.dumps({**GOOD, "name": "bad name"}))
    (tmp_path / "09-ignored.txt").write_text("whatever")
    (tmp_path / "10-b.conflist").write_text(json.dumps(GOOD))
    (tmp_path / "20-a.conflist").write_text(json.dumps({**GOOD, "name": "net-a"}))
    loaded = load_dir(tmp_path)
    assert loaded.config is not None
    assert loaded.config.name == "net-b"
    assert loaded.config.source == tmp_path / "10-b.conflist"
    assert loaded.config.cni_version == "1.0.0"
    assert [p["type"] for p in loaded.config.plugins] == ["bridge", "portmap"]
    assert len(loaded.reasons) == 4
    for reason, fname in zip(loaded.reasons, ["00-broken", "05-noplugins", "07-notype", "08-badname"],
                             strict=True):
        assert reason.startswith(fname)
    assert "invalid JSON" in loaded.reasons[0]
    assert "type" in loaded.reasons[2]


def test_single_plugin_conf_is_wrapped(tmp_path: Path) -> None:
    single = {"cniVersion": "0.4.0", "name": "single", "type": "bridge", "bridge": "cni0"}
    (tmp_path / "50-single.conf").write_text(json.dumps(single))
    loaded = load_dir(tmp_path)
    assert loaded.config is not None
    assert loaded.config.name == "single" and loaded.config.cni_version == "0.4.0"
    assert loaded.config.plugins == [single]
    assert json.loads(loaded.config.data)["plugins"] == [single]
    assert loaded.config.raw["plugins"] == [single]


def test_invalid_versions_and_everything_invalid(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps({**GOOD, "cniVersion": 1}))
    (tmp_path / "b.conflist").write_text("[]")
    loaded = load_dir(tmp_path)
    assert loaded.config is None
    assert [r.split(":")[0] for r in loaded.reasons] == ["a.json", "b.conflist"]
    with pytest.raises(CNIConfigError, match="plugins"):
        parse_conflist(json.dumps({**GOOD, "plugins": []}).encode(), tmp_path / "x")


def test_fingerprint_changes_with_files(tmp_path: Path) -> None:
    f = tmp_path / "10.conflist"
    f.write_text(json.dumps(GOOD))
    fp1 = fingerprint(tmp_path)
    assert fp1 == fingerprint(tmp_path)
    (tmp_path / "ignored.txt").write_text("x")
    assert fingerprint(tmp_path) == fp1
    f.write_text(json.dumps({**GOOD, "name": "net-longer-name"}))
    fp2 = fingerprint(tmp_path)
    assert fp2 != fp1
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert fingerprint(tmp_path) != fp2
    f.unlink()
    assert fingerprint(tmp_path) == ()


def test_cni_versions_picks_highest_known(tmp_path: Path) -> None:
    conf = {**GOOD, "cniVersions": ["0.4.0", "1.0.0", "9.9.9"]}
    del conf["cniVersion"]
    cfg = parse_conflist(json.dumps(conf).encode(), tmp_path / "x")
    assert cfg.cni_version == "1.0.0"
    both = {**GOOD, "cniVersion": "0.3.1", "cniVersions": ["0.4.0"]}
    assert parse_conflist(json.dumps(both).encode(), tmp_path / "x").cni_version == "0.4.0"
    with pytest.raises(CNIConfigError, match="unsupported cniVersion"):
        parse_conflist(json.dumps({**GOOD, "cniVersion": "0.5.0"}).encode(), tmp_path / "x")
    with pytest.raises(CNIConfigError, match="cniVersions"):
        parse_conflist(json.dumps({**GOOD, "cniVersions": "1.0.0"}).encode(), tmp_path / "x")
    missing = dict(GOOD)
    del missing["cniVersion"]
    with pytest.raises(CNIConfigError, match="missing 'cniVersion'"):
        parse_conflist(json.dumps(missing).encode(), tmp_path / "x")


@pytest.mark.parametrize(("value", "expected"), [(True, True), ("true", True), ("False", False),
                                                 (False, False)])
def test_disable_check_bool_or_string(tmp_path: Path, value: object, expected: bool) -> None:
    cfg = parse_conflist(json.dumps({**GOOD, "disableCheck": value}).encode(), tmp_path / "x")
    assert cfg.disable_check is expected


def test_disable_check_invalid(tmp_path: Path) -> None:
    with pytest.raises(CNIConfigError, match="disableCheck"):
        parse_conflist(json.dumps({**GOOD, "disableCheck": "yes"}).encode(), tmp_path / "x")


def _exe(path: Path) -> None:
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)


def test_missing_plugin_binaries_skip_the_config(tmp_path: Path) -> None:
    conf_dir, bin_dir = tmp_path / "net.d", tmp_path / "bin"
    conf_dir.mkdir()
    bin_dir.mkdir()
    (conf_dir / "10-calico.conflist").write_text(json.dumps(
        {"cniVersion": "1.0.0", "name": "k8s-pod-network", "plugins": [{"type": "calico"}]}))
    (conf_dir / "20-bridge.conflist").write_text(json.dumps(
        {"cniVersion": "1.0.0", "name": "br", "plugins": [
            {"type": "bridge", "ipam": {"type": "host-local"}}, {"type": "portmap"}]}))
    for name in ("bridge", "portmap"):
        _exe(bin_dir / name)
    loaded = load_dir(conf_dir, [bin_dir])
    assert loaded.config is None
    assert loaded.reasons[0].startswith("10-calico.conflist: CNI plugin 'calico' not found in")
    assert "'host-local' not found" in loaded.reasons[1]
    assert str(bin_dir) in loaded.why_not(conf_dir) and str(conf_dir) in loaded.why_not(conf_dir)
    # Without plugin_dirs nothing is checked; the fingerprint sees the binary appear.
    loaded_nocheck = load_dir(conf_dir)
    assert loaded_nocheck.config is not None and loaded_nocheck.config.name == "k8s-pod-network"
    fp = fingerprint(conf_dir, [bin_dir])
    _exe(bin_dir / "host-local")
    assert fingerprint(conf_dir, [bin_dir]) != fp
    loaded = load_dir(conf_dir, [bin_dir])
    assert loaded.config is not None and loaded.config.name == "br"
    assert len(loaded.reasons) == 1


def test_why_not_for_an_empty_dir(tmp_path: Path) -> None:
    loaded = load_dir(tmp_path)
    assert loaded.why_not(tmp_path) == (f"no valid CNI network config in {tmp_path}: "
                                        "no .conflist, .conf or .json file")


def test_directories_and_dotfiles(tmp_path: Path) -> None:
    (tmp_path / "00-dir.conflist").mkdir()
    (tmp_path / ".01-hidden.conflist").write_text(json.dumps({**GOOD, "name": "hidden"}))
    (tmp_path / "02-link.conflist").symlink_to(tmp_path / "real.txt")
    (tmp_path / "real.txt").write_text(json.dumps({**GOOD, "name": "linked"}))
    loaded = load_dir(tmp_path)
    assert loaded.config is not None and loaded.config.name == "linked"
    assert loaded.reasons == ["00-dir.conflist: not a regular file"]


def test_oversized_config(tmp_path: Path) -> None:
    (tmp_path / "10.conflist").write_bytes(b" " * (2 << 20))
    assert "larger than" in load_dir(tmp_path).reasons[0]


def test_the_default_network_is_masqueraded_by_pycri_and_not_per_pod(tmp_path: Path) -> None:
    """hack/install.sh installs the two together: the conflist without the bridge plugin's
    per-pod ipMasq, and the pycri drop-in that masquerades the same subnet."""
    hack = Path(__file__).resolve().parents[3] / "hack" / "cni"
    net = load_file(hack / "10-pycri-bridge.conflist")
    bridge = net.plugins[0]
    assert bridge["type"] == "bridge" and bridge["ipMasq"] is False
    subnets = [r["subnet"] for rs in bridge["ipam"]["ranges"] for r in rs]
    dropin = tmp_path / "pycri.conf.d"
    dropin.mkdir()
    (dropin / "10-default-network.conf").write_bytes(
        (hack / "10-default-network.conf").read_bytes())
    (tmp_path / "pycri.conf").write_text("")
    cfg = pycri_config.load(tmp_path / "pycri.conf")
    assert cfg.network.masquerade_cidrs == subnets
