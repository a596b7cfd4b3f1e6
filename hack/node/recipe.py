"""What build.sh reads off the host for the node guest's image (stdlib only, any Python >= 3.11).

    python3 recipe.py requirements PYPROJECT   pip requirements: [project].dependencies plus,
                                               from the dev extra, pytest and pytest-timeout
    python3 recipe.py sources FILE...          the host's apt sources for Debian 12 (bookworm),
                                               as one deb822 file, for mmdebstrap's mirror argument
"""

import re
import sys
import tomllib
from pathlib import Path

DEV_TOOLS = {"pytest", "pytest-timeout"}
SUITE = re.compile(r"bookworm(-updates|-security|-backports)?")


def requirements(pyproject: Path) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    wanted = list(project.get("dependencies", []))
    for req in project.get("optional-dependencies", {}).get("dev", []):
        name = re.match(r"[A-Za-z0-9._-]+", req)
        if name and name.group(0).lower().replace("_", "-") in DEV_TOOLS:
            wanted.append(req)
    return wanted


def deb822_stanzas(text: str) -> list[list[str]]:
    stanzas: list[list[str]] = [[]]
    for line in text.splitlines():
        if not line.strip():
            stanzas.append([])
        elif not line.startswith("#"):
            stanzas[-1].append(line)
    return [s for s in stanzas if s]


def field(stanza: list[str], name: str) -> str | None:
    for line in stanza:
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None


def from_deb822(text: str) -> list[str]:
    """The enabled `deb` stanzas, their suites cut down to bookworm's."""
    out = []
    for stanza in deb822_stanzas(text):
        suites = [s for s in (field(stanza, "Suites") or "").split() if SUITE.fullmatch(s)]
        if "deb" not in (field(stanza, "Types") or "").split() or not suites:
            continue
        if (field(stanza, "Enabled") or "yes").lower() == "no":
            continue
        kept = []
        for line in stanza:
            key = line.partition(":")[0].strip().lower()
            if key == "types":
                line = "Types: deb"
            elif key == "suites":
                line = "Suites: " + " ".join(suites)
            kept.append(line)
        out.append("\n".join(kept))
    return out


ONE_LINE = re.compile(r"deb\s+(?:\[(?P<opts>[^\]]*)\]\s+)?(?P<uri>\S+)\s+(?P<suite>\S+)\s+(?P<comps>.+)")
OPTIONS = {"signed-by": "Signed-By", "trusted": "Trusted", "arch": "Architectures"}


def from_one_line(text: str) -> list[str]:
    out = []
    for line in text.splitlines():
        m = ONE_LINE.fullmatch(line.split("#", 1)[0].strip())
        if not m or not SUITE.fullmatch(m["suite"]):
            continue
        stanza = ["Types: deb", f"URIs: {m['uri']}", f"Suites: {m['suite']}", f"Components: {m['comps']}"]
        for opt in (m["opts"] or "").split():
            key, _, value = opt.partition("=")
            if key in OPTIONS:
                stanza.append(f"{OPTIONS[key]}: {value.replace(',', ' ')}")
        out.append("\n".join(stanza))
    return out


def sources(files: list[Path]) -> list[str]:
    out = []
    for path in files:
        if path.suffix == ".sources":
            out += from_deb822(path.read_text())
        elif path.suffix == ".list" or path.name == "sources.list":
            out += from_one_line(path.read_text())
    return out


def main(argv: list[str]) -> int:
    if argv[:1] == ["requirements"] and len(argv) == 2:
        print("\n".join(requirements(Path(argv[1]))))
        return 0
    if argv[:1] == ["sources"]:
        found = sources([Path(p) for p in argv[1:] if Path(p).is_file()])
        if not found:
            print("recipe.py: the host's apt sources have no Debian bookworm suite", file=sys.stderr)
            return 1
        print("\n\n".join(found))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
