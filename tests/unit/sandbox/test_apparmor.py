"""AppArmor: the default profile's text, the start-up decision to load it, and the profile each
request gets; the kernel and apparmor_parser are played by FakeHost (this host's kernel has no
AppArmor). SystemHost itself is tested against a tmp_path /sys and a stand-in parser."""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from sandbox.apparmor import (
    DEFAULT_PROFILE,
    RUNTIME_DEFAULT,
    AppArmor,
    AppArmorError,
    Kind,
    NotLoaded,
    NotSupported,
    Request,
    SystemHost,
    check_name,
)
from sandbox.apparmor.host import parse_label, parse_profiles, peer_label
from sandbox.apparmor.profile import render
from tests.fixtures.apparmor import FakeHost

UNCONFINED = Request(Kind.UNCONFINED)


def started(host: FakeHost, configured: str = DEFAULT_PROFILE, tmp: Path | None = None
            ) -> AppArmor:
    aa = AppArmor(host, configured, abi_file=(tmp or Path("/nonexistent")) / "abi-3.0")
    aa.start()
    return aa


def current_marker(host: FakeHost) -> str:
    return AppArmor(host, abi_file=Path("/nonexistent")).rendered().marker


# --- the kernel's files -----------------------------------------------------------------------


def test_parse_profiles() -> None:
    text = ("pycri-default (enforce)\npycri-default//text-00 (enforce)\n"
            "/usr/sbin/ntpd (complain)\nnvidia_modprobe (enforce)\n"
            "with (paren) in it (kill)\n\ngarbage\n")
    assert parse_profiles(text) == {"pycri-default", "pycri-default//text-00", "/usr/sbin/ntpd",
                                    "nvidia_modprobe", "with (paren) in it"}
    assert parse_profiles("") == frozenset()


@pytest.mark.parametrize("text,label", [
    ("unconfined\n", "unconfined"),
    ("pycri-default (enforce)\n", "pycri-default"),
    ("/usr/bin/pycri (complain)\x00", "/usr/bin/pycri"),
    ("", "unconfined"),
])
def test_parse_label(text: str, label: str) -> None:
    assert parse_label(text) == label


@pytest.mark.parametrize("label,ok", [
    ("/usr/sbin/pycri", True), ("pycri-daemon", True), (":ns:prof//child", True),
    ("a b", False), ("x,", False), ("x}", False), ("x\n", False), ("", False),
])
def test_peer_label_only_takes_what_cannot_end_a_rule(label: str, ok: bool) -> None:
    assert (peer_label(label) is not None) == ok


@pytest.mark.parametrize("name", ["", "a b", "tab\there", "nl\n", "nul\x00", "del\x7f"])
def test_check_name_refuses(name: str) -> None:
    with pytest.raises(ValueError, match="not an AppArmor profile name"):
        check_name(name)


def test_check_name_takes_paths_and_children() -> None:
    for name in ("pycri-default", "/usr/bin/foo", "parent//child", "cri-validate-apparmor-test"):
        check_name(name)


# --- the default profile's text ---------------------------------------------------------------


def test_rendered_profile_is_deterministic_and_marked_with_its_hash() -> None:
    p = render(DEFAULT_PROFILE)
    assert p == render(DEFAULT_PROFILE)
    assert re.fullmatch(r"pycri-default//text-[0-9a-f]{16}", p.marker)
    child = p.marker.split("//")[1]
    assert p.text.count(child) == 1
    assert p.text.startswith("# pycri-default:")
    assert "profile pycri-default flags=(attach_disconnected,mediate_deleted) {" in p.text


def test_marker_follows_every_input() -> None:
    base = render(DEFAULT_PROFILE)
    others = [render(DEFAULT_PROFILE, abi=False), render("other-name"),
              render(DEFAULT_PROFILE, daemon_peers=["/usr/bin/pycri"])]
    assert len({base.digest, *(o.digest for o in others)}) == 4


def test_rendered_profile_peers() -> None:
    p = render(DEFAULT_PROFILE, daemon_peers=["/usr/bin/pycri", "unconfined", DEFAULT_PROFILE])
    assert p.text.count("signal (receive) peer=/usr/bin/pycri,") == 1
    assert p.text.count("peer=unconfined") == 1  # not twice for an unconfined daemon
    assert "abi <abi/3.0>," in p.text
    assert "abi <" not in render(DEFAULT_PROFILE, abi=False).text


def test_rendered_profile_denies_what_it_says() -> None:
    rules = {line.strip() for line in render(DEFAULT_PROFILE).text.splitlines()}
    for rule in ("deny mount,", "deny umount,", "deny pivot_root,", "deny /proc/* w,",
                 "deny /proc/[^0-9]*/** w,", "deny /proc/sysrq-trigger rwklx,",
                 "deny /proc/kcore rwklx,", "deny /sys/** wkl,",
                 "deny /sys/firmware/** rwklx,", "deny /sys/kernel/security/** rwklx,",
                 "ptrace (trace, tracedby, read, readby) peer=pycri-default,"):
        assert rule in rules, rule


def _parse_only(text: str) -> subprocess.CompletedProcess[bytes]:
    parser = shutil.which("apparmor_parser") or "/usr/sbin/apparmor_parser"
    # -Q: compile only, never touch the kernel; -K: no cache.
    return subprocess.run([parser, "-Q", "-K"], input=text.encode(), capture_output=True,
                          check=False)


@pytest.mark.skipif(not (shutil.which("apparmor_parser")
                         or Path("/usr/sbin/apparmor_parser").exists()),
                    reason="apparmor_parser is not installed (Debian package apparmor; "
                           "hack/install.sh installs it)")
@pytest.mark.parametrize("abi", [True, False])
def test_rendered_profile_compiles(abi: bool) -> None:
    p = render(DEFAULT_PROFILE, daemon_peers=["/usr/bin/pycri", ":ns:x//y"],
               abi=abi and Path("/etc/apparmor.d/abi/3.0").exists())
    res = _parse_only(p.text)
    assert res.returncode == 0, res.stderr.decode()
    # The same parser does refuse a broken profile: the check above can fail.
    broken = _parse_only(p.text.replace("deny mount,", "deny mount"))
    assert broken.returncode != 0


# --- start-up ---------------------------------------------------------------------------------


def test_no_apparmor_in_the_kernel_needs_nothing() -> None:
    host = FakeHost(enabled=False, parser=False)
    aa = started(host)
    assert (aa.enabled, aa.default, host.loads) == (False, None, [])
    assert aa.profile_for(RUNTIME_DEFAULT, privileged=False) is None
    assert aa.profile_for(UNCONFINED, privileged=False) is None
    with pytest.raises(NotSupported, match=r"'mine'.*not enabled"):
        aa.profile_for(Request(Kind.LOCALHOST, "mine"), privileged=False)


def test_start_loads_the_default_when_missing() -> None:
    host = FakeHost(loaded={"nvidia_modprobe"})
    aa = started(host)
    assert len(host.loads) == 1 and aa.default == DEFAULT_PROFILE
    assert current_marker(host) in host.profiles
    assert aa.profile_for(RUNTIME_DEFAULT, privileged=False) == DEFAULT_PROFILE


def test_start_keeps_a_current_default() -> None:
    host = FakeHost()
    started(host)
    again = started(host)  # a second daemon, or the same one restarted
    assert len(host.loads) == 1 and again.default == DEFAULT_PROFILE


def test_start_replaces_an_older_text() -> None:
    host = FakeHost(loaded={DEFAULT_PROFILE, f"{DEFAULT_PROFILE}//text-0000000000000000"})
    started(host)
    assert len(host.loads) == 1
    assert host.profiles == {DEFAULT_PROFILE, current_marker(host)}


def test_start_reloads_when_the_daemons_own_label_changes() -> None:
    host = FakeHost()
    started(host)
    host.own_label = "/usr/bin/pycri"
    aa = started(host)
    assert len(host.loads) == 2
    assert "signal (receive) peer=/usr/bin/pycri," in host.loads[1]
    assert aa.default == DEFAULT_PROFILE


def test_start_skips_a_label_it_cannot_name(caplog: pytest.LogCaptureFixture) -> None:
    host = FakeHost(label="odd label,")
    with caplog.at_level(logging.WARNING):
        started(host)
    assert "odd label," not in host.loads[0]
    assert "cannot be named" in caplog.text


def test_start_pins_the_abi_where_the_host_has_it(tmp_path: Path) -> None:
    (tmp_path / "abi-3.0").write_text("")
    host = FakeHost()
    started(host, tmp=tmp_path)
    assert "abi <abi/3.0>," in host.loads[0]


def test_start_fails_when_the_parser_fails() -> None:
    host = FakeHost(fail="apparmor_parser failed (exit 1): syntax error")
    with pytest.raises(AppArmorError, match="syntax error"):
        started(host)


def test_start_fails_when_the_kernel_does_not_list_what_was_loaded() -> None:
    with pytest.raises(AppArmorError, match="does not list pycri-default//text-"):
        started(FakeHost(lists_nothing=True))


def test_unconfined_by_config_loads_nothing() -> None:
    host = FakeHost()
    aa = started(host, "unconfined")
    assert (aa.default, host.loads) == (None, [])
    assert aa.profile_for(RUNTIME_DEFAULT, privileged=False) is None
    host.profiles.add("mine")
    assert aa.profile_for(Request(Kind.LOCALHOST, "mine"), privileged=False) == "mine"


def test_an_administrators_default_must_be_loaded() -> None:
    with pytest.raises(NotLoaded, match="'site-default' is not loaded") as exc:
        started(FakeHost(), "site-default")
    assert exc.value.name == "site-default"
    host = FakeHost(loaded={"site-default"})
    aa = started(host, "site-default")
    assert host.loads == [] and aa.profile_for(RUNTIME_DEFAULT, privileged=False) == "site-default"


def test_no_parser_runs_without_the_default(caplog: pytest.LogCaptureFixture) -> None:
    host = FakeHost(parser=False)
    with caplog.at_level(logging.WARNING):
        aa = started(host)
    assert aa.default is None and "WITHOUT an AppArmor profile" in caplog.text
    assert aa.profile_for(RUNTIME_DEFAULT, privileged=False) is None


def test_no_parser_uses_a_default_that_is_already_loaded() -> None:
    host = FakeHost(parser=False, loaded={DEFAULT_PROFILE})
    aa = started(host)
    assert aa.profile_for(RUNTIME_DEFAULT, privileged=False) == DEFAULT_PROFILE


# --- the profile of each container ------------------------------------------------------------


@pytest.mark.parametrize("request_,privileged,expected", [
    (RUNTIME_DEFAULT, False, DEFAULT_PROFILE),
    (RUNTIME_DEFAULT, True, None),  # privileged opts out of the runtime's default...
    (UNCONFINED, False, None),
    (Request(Kind.LOCALHOST, "deny-write"), False, "deny-write"),
    (Request(Kind.LOCALHOST, "deny-write"), True, "deny-write"),  # ...not out of its own
])
def test_profile_for(request_: Request, privileged: bool, expected: str | None) -> None:
    aa = started(FakeHost(loaded={"deny-write"}))
    assert aa.profile_for(request_, privileged=privileged) == expected


def test_an_unloaded_localhost_profile_is_named() -> None:
    aa = started(FakeHost())
    with pytest.raises(NotLoaded, match="'non-existent-profile' is not loaded") as exc:
        aa.profile_for(Request(Kind.LOCALHOST, "non-existent-profile"), privileged=False)
    assert exc.value.name == "non-existent-profile"


def test_a_localhost_profile_loaded_after_start_is_seen() -> None:
    host = FakeHost()
    aa = started(host)
    host.profiles.add("late")
    assert aa.profile_for(Request(Kind.LOCALHOST, "late"), privileged=False) == "late"


def test_the_default_is_loaded_again_after_an_unload() -> None:
    host = FakeHost()
    aa = started(host)
    host.profiles.clear()  # aa-teardown
    assert aa.profile_for(RUNTIME_DEFAULT, privileged=False) == DEFAULT_PROFILE
    assert len(host.loads) == 2 and DEFAULT_PROFILE in host.profiles
    assert aa.profile_for(RUNTIME_DEFAULT, privileged=False) == DEFAULT_PROFILE
    assert len(host.loads) == 2


def test_an_administrators_default_unloaded_later_is_an_error() -> None:
    host = FakeHost(loaded={"site-default"})
    aa = started(host, "site-default")
    host.profiles.clear()
    with pytest.raises(NotLoaded, match=r"'site-default'.*no longer loaded"):
        aa.profile_for(RUNTIME_DEFAULT, privileged=False)
    assert host.loads == []


# --- SystemHost against a tmp_path /sys and a stand-in parser ---------------------------------


def fake_sys(root: Path, enabled: str | None = "Y\n", securityfs: bool = True) -> Path:
    if enabled is not None:
        (root / "module/apparmor/parameters").mkdir(parents=True)
        (root / "module/apparmor/parameters/enabled").write_text(enabled)
    if securityfs:
        (root / "kernel/security/apparmor").mkdir(parents=True)
        (root / "kernel/security/apparmor/profiles").write_text("a (enforce)\nb//c (complain)\n")
    return root


@pytest.mark.parametrize("enabled,securityfs,expected", [
    ("Y\n", True, True), ("N\n", True, False), (None, False, False), ("Y\n", False, False),
])
def test_system_host_enabled(tmp_path: Path, enabled: str | None, securityfs: bool,
                             expected: bool) -> None:
    host = SystemHost(sys_root=fake_sys(tmp_path, enabled, securityfs))
    assert host.enabled() is expected


def test_system_host_loaded(tmp_path: Path) -> None:
    assert SystemHost(sys_root=fake_sys(tmp_path)).loaded() == {"a", "b//c"}
    with pytest.raises(AppArmorError, match="cannot read the loaded AppArmor profiles"):
        SystemHost(sys_root=tmp_path / "none").loaded()


def test_system_host_label(tmp_path: Path) -> None:
    (tmp_path / "attr").mkdir()
    (tmp_path / "attr/current").write_text("shared (enforce)\n")
    assert SystemHost(proc_self=tmp_path).label() == "shared"
    (tmp_path / "attr/apparmor").mkdir()
    (tmp_path / "attr/apparmor/current").write_text("own (complain)\n")
    assert SystemHost(proc_self=tmp_path).label() == "own"
    assert SystemHost(proc_self=tmp_path / "none").label() == "unconfined"


def stand_in_parser(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "apparmor_parser"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return script


def test_system_host_load_feeds_the_text_to_parser_replace_without_cache(tmp_path: Path) -> None:
    out = tmp_path / "seen"
    parser = stand_in_parser(tmp_path, f'echo "$@" > {out}.args; cat > {out}.text')
    SystemHost(parser=parser).load("profile x {}\n")
    assert (tmp_path / "seen.args").read_text() == "-Kr\n"
    assert (tmp_path / "seen.text").read_text() == "profile x {}\n"


def test_system_host_load_reports_the_parsers_error(tmp_path: Path) -> None:
    parser = stand_in_parser(tmp_path, 'cat >/dev/null; echo "AppArmor parser error at line 3" >&2;'
                                       ' exit 1')
    with pytest.raises(AppArmorError, match=r"exit 1\): AppArmor parser error at line 3"):
        SystemHost(parser=parser).load("x")


def test_system_host_load_times_out(tmp_path: Path) -> None:
    parser = stand_in_parser(tmp_path, "exec sleep 30")
    with pytest.raises(AppArmorError, match="did not finish"):
        SystemHost(parser=parser, timeout=0.2).load("x")
