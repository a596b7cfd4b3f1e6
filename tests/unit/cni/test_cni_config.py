from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cni.config import fingerprint, load_dir, parse_conflist
from cni.errors import CNIConfigError

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
