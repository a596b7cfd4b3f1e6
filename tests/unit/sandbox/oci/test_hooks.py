"""OCI hook files (oci-hooks(5), schema 1.0.0): parsing, when-matching, injection next to
hooks already in the spec."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sandbox.oci.hooks import STAGES, Hook, HookError, inject, matching, parse

SH = "/bin/sh"  # a hook path that exists


def hook_json(**over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"version": "1.0.0", "hook": {"path": SH},
                            "when": {"always": True}, "stages": ["prestart"]}
    data.update(over)
    return data


def parsed(**over: Any) -> Hook:
    return parse("h.json", Path("/x/h.json"), json.dumps(hook_json(**over)).encode())


def spec(args: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    return {"process": {"args": args or ["/bin/app", "--x"]}, **extra}


def matches(hook: Hook, annotations: dict[str, str] | None = None,
            args: list[str] | None = None, binds: bool = False) -> bool:
    return bool(matching([hook], spec(args), annotations or {}, binds))


# --- parsing -----------------------------------------------------------------------------------

def test_a_full_hook_file_parses_to_its_runtime_spec_entry() -> None:
    h = parsed(hook={"path": SH, "args": ["sh", "-c", "true"], "env": ["A=1"], "timeout": 5,
                     "unknown": "ignored"},
               stages=list(STAGES))
    assert h.entry == {"path": SH, "args": ["sh", "-c", "true"], "env": ["A=1"], "timeout": 5}
    assert h.stages == STAGES
    assert h.name == "h.json"


@pytest.mark.parametrize(("over", "reason"), [
    ({"version": "0.1.0"}, "version '0.1.0' is not supported"),
    ({"version": None}, "version None is not supported"),
    ({"hook": {}}, "hook.path is missing"),
    ({"hook": "/bin/sh"}, "hook must be an object"),
    ({"hook": {"path": "bin/sh"}}, "must be absolute"),
    ({"hook": {"path": "/no/such/hook"}}, "/no/such/hook does not exist"),
    ({"hook": {"path": SH, "args": "sh"}}, "hook.args must be a list of strings"),
    ({"hook": {"path": SH, "env": [1]}}, "hook.env must be a list of strings"),
    ({"hook": {"path": SH, "timeout": 0}}, "hook.timeout must be a positive"),
    ({"hook": {"path": SH, "timeout": True}}, "hook.timeout must be a positive"),
    ({"stages": []}, "stages is empty"),
    ({"stages": None}, "stages must be a list of strings"),
    ({"stages": ["prestart", "precreate"]}, "unknown stage 'precreate'"),
    ({"when": None}, "when is missing"),
    ({"when": {}}, "when sets no condition"),
    ({"when": {"annotation": {"a": "b"}}}, "when sets no condition"),  # a typo of annotations
    ({"when": {"always": "yes"}}, "when.always must be true or false"),
    ({"when": {"hasBindMounts": 1}}, "when.hasBindMounts must be true or false"),
    ({"when": {"commands": "sh"}}, "when.commands must be a list of strings"),
    ({"when": {"commands": ["("]}}, "when.commands entry '(' is not a valid regular"),
    ({"when": {"annotations": {"[": "a"}}}, "when.annotations key '[' is not a valid"),
    ({"when": {"annotations": {"a": "("}}}, "when.annotations['a'] '(' is not a valid"),
    ({"when": {"annotations": ["a"]}}, "when.annotations must be an object"),
])
def test_invalid_hook_files_say_why(over: dict[str, Any], reason: str) -> None:
    with pytest.raises(HookError) as err:
        parsed(**over)
    assert reason in str(err.value)


@pytest.mark.parametrize(("raw", "reason"), [
    (b"{", "not JSON"), (b"[1]", "not a JSON object"), (b"\xff", "not JSON")])
def test_files_that_are_not_json_objects_are_invalid(raw: bytes, reason: str) -> None:
    with pytest.raises(HookError, match=reason):
        parse("h.json", Path("/x/h.json"), raw)


# --- when --------------------------------------------------------------------------------------

def test_always_matches_every_container_and_false_none() -> None:
    assert matches(parsed(when={"always": True}))
    assert not matches(parsed(when={"always": False}))


def test_commands_are_searched_in_args0_only() -> None:
    h = parsed(when={"commands": [".*/init$", "^/usr/bin/systemd$"]})
    assert matches(h, args=["/sbin/init"])
    assert matches(h, args=["/usr/bin/systemd", "--system"])
    assert not matches(h, args=["/bin/sh", "/sbin/init"])  # not args[1]
    assert not matches(h, args=["/sbin/init.sh"])
    # Not anchored unless the pattern says so (Go's MatchString in the reference reader).
    assert matches(parsed(when={"commands": ["sleep"]}), args=["/bin/sleep"])


def test_annotations_need_a_key_and_its_value_to_match_for_every_pair() -> None:
    h = parsed(when={"annotations": {r"^com\.example\.department$": ".*fluid-dynamics$",
                                     "^gpu$": "^(yes|true)$"}})
    good = {"com.example.department": "r&d fluid-dynamics", "gpu": "true", "other": "x"}
    assert matches(h, good)
    assert not matches(h, {**good, "gpu": "no"})
    assert not matches(h, {"com.example.department": "fluid-dynamics-lab", "gpu": "yes"})
    # The key and its value must match in the same annotation.
    assert not matches(h, {"com.example.departments": "fluid-dynamics", "gpu": "yes"})
    assert not matches(h, {})


def test_posix_bracket_classes_work_as_in_an_ere() -> None:
    h = parsed(when={"commands": [r"^/opt/app-[[:digit:]]+[[:space:]]?$", "[]x]y", "[^]x]z"]})
    assert matches(h, args=["/opt/app-42"])
    assert not matches(h, args=["/opt/app-4a"])
    assert matches(h, args=["]y"]) and matches(h, args=["az"]) and not matches(h, args=["]z"])
    alnum = parsed(when={"annotations": {"^[[:alpha:]][[:alnum:]_.-]*$": "^[[:upper:]]+$"}})
    assert matches(alnum, {"a.b": "YES"})
    assert not matches(alnum, {"1ab": "YES"}) and not matches(alnum, {"ab": "Yes"})
    # Outside brackets it is no class: "[:digit:]" alone is the set of ":digt".
    assert matches(parsed(when={"commands": ["^[:digit:]$"]}), args=["t"])
    assert not matches(parsed(when={"commands": [r"^\[:digit:]$"]}), args=["7"])


def test_has_bind_mounts_needs_bind_mounts_and_true() -> None:
    h = parsed(when={"hasBindMounts": True})
    assert matches(h, binds=True)
    assert not matches(h, binds=False)
    assert not matches(parsed(when={"hasBindMounts": False}), binds=False)


def test_every_condition_set_must_hold() -> None:
    h = parsed(when={"always": True, "hasBindMounts": True, "commands": ["sh$"],
                     "annotations": {"^a$": "^1$"}})
    assert matches(h, {"a": "1"}, ["/bin/sh"], binds=True)
    assert not matches(h, {"a": "1"}, ["/bin/sh"], binds=False)
    assert not matches(h, {"a": "2"}, ["/bin/sh"], binds=True)
    assert not matches(h, {"a": "1"}, ["/bin/ls"], binds=True)
    assert not matches(parsed(when={"always": False, "commands": ["sh$"]}), args=["/bin/sh"])


def test_a_spec_without_args_matches_no_command() -> None:
    h = parsed(when={"commands": [".*"]})
    assert not matching([h], {"process": {"args": []}}, {}, False)
    assert not matching([h], {}, {}, False)


# --- injection ---------------------------------------------------------------------------------

def test_hooks_are_appended_after_entries_already_in_the_spec() -> None:
    cdi = {"path": "/usr/bin/cdi-hook", "args": ["cdi-hook", "x"]}
    s = spec(hooks={"createContainer": [cdi]})
    a = parse("a.json", Path("/x/a.json"), json.dumps(hook_json(
        hook={"path": SH, "args": ["sh", "a"]}, stages=["createContainer", "poststop"])).encode())
    b = parse("b.json", Path("/x/b.json"), json.dumps(hook_json(
        hook={"path": SH, "args": ["sh", "b"]}, stages=["createContainer"])).encode())
    inject(s, [a, b])
    assert s["hooks"]["createContainer"] == [cdi, {"path": SH, "args": ["sh", "a"]},
                                             {"path": SH, "args": ["sh", "b"]}]
    assert s["hooks"]["poststop"] == [{"path": SH, "args": ["sh", "a"]}]
    # Each spec gets its own copy: editing one container's spec changes no other.
    s["hooks"]["poststop"][0]["args"].append("changed")
    assert a.entry["args"] == ["sh", "a"]
