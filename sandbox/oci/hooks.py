"""OCI hook files, read as CRI-O and Podman read them (oci-hooks(5), the 1.0.0 schema of
containers/common pkg/hooks), matched against a container's spec and injected into it:

    {"version": "1.0.0",
     "hook": {"path": "/usr/libexec/x", "args": ["x", "prestart"], "env": ["A=1"], "timeout": 5},
     "when": {"always": true, "annotations": {"KEY-RE": "VALUE-RE"}, "commands": ["RE"],
              "hasBindMounts": true},
     "stages": ["prestart", "createRuntime", "createContainer", "startContainer",
                "poststart", "poststop"]}

Rules, as oci-hooks(5) and its reference reader have them:
- Matching hooks are injected in the order of their file names compared lower-cased.
- ``when`` must set at least one condition, and every condition it sets must hold: ``always``
  and ``hasBindMounts`` hold only when true (``hasBindMounts`` also needs bind mounts from the
  host); each ``annotations`` pair needs one annotation whose key matches KEY-RE and whose value
  matches VALUE-RE; ``commands`` needs ``process.args[0]`` to match one of them.
- Patterns are searched for, not anchored (Go's regexp.MatchString in the reference reader), in
  Python's ``re`` syntax, which agrees with POSIX EREs and RE2 on what hook files use; POSIX
  bracket classes such as ``[[:digit:]]`` are translated.
- The hook's path must exist when the file is read (the reference reader stats it too).

Reading the directories (masking, re-reading, warnings) is sandbox/oci/hook_dirs.py.
"""

from __future__ import annotations

import json
import os
import re
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

VERSION = "1.0.0"
STAGES = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart",
          "poststop")
Spec = dict[str, Any]


class HookError(ValueError):
    """A hook file breaks the schema; the message says where."""


@dataclass(frozen=True)
class When:
    always: bool | None = None
    annotations: tuple[tuple[re.Pattern[str], re.Pattern[str]], ...] = ()
    commands: tuple[re.Pattern[str], ...] = ()
    has_bind_mounts: bool | None = None

    def matches(self, annotations: Mapping[str, str], command: str | None,
                has_bind_mounts: bool) -> bool:
        if self.always is not None and not self.always:
            return False
        if self.has_bind_mounts is not None and not (self.has_bind_mounts and has_bind_mounts):
            return False
        for key, value in self.annotations:
            if not any(key.search(k) and value.search(v) for k, v in annotations.items()):
                return False
        if self.commands:
            return command is not None and any(c.search(command) for c in self.commands)
        return True  # parse() refuses a when without conditions


@dataclass(frozen=True)
class Hook:
    name: str  # the file name: the injection order and what a later directory masks
    source: Path
    entry: Spec  # the runtime-spec hook entry: path, and args, env, timeout when given
    when: When
    stages: tuple[str, ...]

    def oci_entry(self) -> Spec:
        """A copy of the entry, for one spec."""
        return {k: list(v) if isinstance(v, list) else v for k, v in self.entry.items()}


def _strings(value: Any, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise HookError(f"{what} must be a list of strings")
    return list(value)


# POSIX bracket classes, which oci-hooks(5) patterns may use (they are EREs; RE2 has them
# too), in Python's spelling. Only inside a bracket expression: "[[:digit:]]" is "[0-9]".
_POSIX_CLASSES = {
    "alpha": "a-zA-Z", "digit": "0-9", "alnum": "0-9a-zA-Z", "upper": "A-Z", "lower": "a-z",
    "xdigit": "0-9A-Fa-f", "space": r" \t\n\r\f\v", "blank": r" \t", "word": r"\w",
    "punct": re.escape(string.punctuation), "cntrl": r"\x00-\x1f\x7f", "print": r"\x20-\x7e",
    "graph": r"\x21-\x7e",
}
_CLASS_NAME = re.compile(r"\[:([a-z]+):\]")


def _posix_classes(pattern: str) -> str:
    out, i, in_set = [], 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            out.append(pattern[i:i + 2])
            i += 2
            continue
        if in_set and (m := _CLASS_NAME.match(pattern, i)) and m[1] in _POSIX_CLASSES:
            out.append(_POSIX_CLASSES[m[1]])
            i = m.end()
            continue
        if not in_set and c == "[":
            in_set = True
            start = i + 1 + (pattern.startswith("^", i + 1))
            if pattern.startswith("]", start):  # a "]" first is a member, not the end
                start += 1
            out.append(pattern[i:start])
            i = start
            continue
        if in_set and c == "]":
            in_set = False
        out.append(c)
        i += 1
    return "".join(out)


def _pattern(text: Any, what: str) -> re.Pattern[str]:
    if not isinstance(text, str):
        raise HookError(f"{what} must be a string")
    try:
        return re.compile(_posix_classes(text))
    except re.error as exc:
        raise HookError(f"{what} {text!r} is not a valid regular expression: {exc}") from None


def _entry(hook: Any) -> Spec:
    """The runtime-spec hook entry (config.md, POSIX-platform hooks)."""
    if not isinstance(hook, dict):
        raise HookError("hook must be an object")
    path = hook.get("path")
    if not isinstance(path, str) or not path:
        raise HookError("hook.path is missing")
    if not os.path.isabs(path):
        raise HookError(f"hook.path {path!r} must be absolute")
    if not os.path.exists(path):
        raise HookError(f"hook.path {path} does not exist")
    entry: Spec = {"path": path}
    for key in ("args", "env"):
        if key in hook:
            entry[key] = _strings(hook[key], f"hook.{key}")
    if "timeout" in hook:
        timeout = hook["timeout"]
        if not isinstance(timeout, int) or isinstance(timeout, bool) or timeout <= 0:
            raise HookError(f"hook.timeout must be a positive number of seconds, not {timeout!r}")
        entry["timeout"] = timeout
    return entry


def _when(when: Any) -> When:
    if not isinstance(when, dict):
        raise HookError("when is missing or not an object")
    flags: dict[str, bool | None] = {}
    for key in ("always", "hasBindMounts"):
        value = when.get(key)
        if value is not None and not isinstance(value, bool):
            raise HookError(f"when.{key} must be true or false")
        flags[key] = value
    annotations = when.get("annotations", {})
    if not isinstance(annotations, dict):
        raise HookError("when.annotations must be an object of key and value patterns")
    pairs = tuple((_pattern(k, "when.annotations key"), _pattern(v, f"when.annotations[{k!r}]"))
                  for k, v in annotations.items())
    commands = tuple(_pattern(c, "when.commands entry")
                     for c in _strings(when.get("commands", []), "when.commands"))
    out = When(always=flags["always"], annotations=pairs, commands=commands,
               has_bind_mounts=flags["hasBindMounts"])
    if out == When():
        raise HookError("when sets no condition (always, annotations, commands, hasBindMounts)")
    return out


def parse(name: str, source: Path, raw: bytes) -> Hook:
    """One hook file's content; HookError says what is wrong with it."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise HookError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise HookError("not a JSON object")
    version = data.get("version")
    if version != VERSION:
        raise HookError(f"version {version!r} is not supported (only {VERSION!r})")
    stages = _strings(data.get("stages"), "stages")
    if not stages:
        raise HookError("stages is empty")
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise HookError(f"unknown stage {unknown[0]!r} (stages: {', '.join(STAGES)})")
    return Hook(name=name, source=source, entry=_entry(data.get("hook")),
                when=_when(data.get("when")), stages=tuple(stages))


def matching(hooks: Iterable[Hook], spec: Spec, annotations: Mapping[str, str],
             has_bind_mounts: bool) -> list[Hook]:
    """The hooks whose ``when`` holds for ``spec`` (its process.args[0]) with ``annotations``."""
    args = (spec.get("process") or {}).get("args") or []
    command = args[0] if args else None
    return [h for h in hooks if h.when.matches(annotations, command, has_bind_mounts)]


def inject(spec: Spec, hooks: Iterable[Hook]) -> None:
    """Append each hook to spec["hooks"][stage] for its stages. Entries already there (NRI
    plugins', CDI devices') stay, and first: a hook file never takes their place."""
    table = spec.setdefault("hooks", {})
    for hook in hooks:
        for stage in hook.stages:
            table.setdefault(stage, []).append(hook.oci_entry())
