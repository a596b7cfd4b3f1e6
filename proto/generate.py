"""Regenerate the Python modules compiled from proto/: message classes and typed .pyi files.

    .venv/bin/python proto/generate.py [--root DIR]

- proto/api.proto (CRI v1) -> cri/api/: messages and gRPC stubs.
- proto/nri/api.proto (NRI) and proto/nri/ttrpc.proto (ttrpc's envelope) -> cri/nri/api/:
  messages only, since NRI runs over ttrpc (cri/nri/), not gRPC.

Each proto is compiled under the path of its Python package (e.g. cri/api/api.proto) so that
the generated modules import each other package-absolute (``cri.api.api_pb2``). Output is
deterministic: the same input gives byte-identical files, which a unit test checks against the
committed ones. ``--root`` writes the same tree under another directory (default: the repo).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path

from grpc_tools import protoc  # type: ignore[import-untyped]

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Unit:
    """Proto files compiled together into one Python package."""

    sources: tuple[str, ...]  # relative to proto/
    package: str  # the package directory, relative to the repo
    grpc: bool  # also gRPC service stubs

    def outputs(self) -> list[str]:
        stems = [Path(src).stem for src in self.sources]
        kinds = ["_pb2.py", "_pb2.pyi"] + (["_pb2_grpc.py", "_pb2_grpc.pyi"] if self.grpc else [])
        return [stem + kind for stem in stems for kind in kinds]


UNITS = (
    Unit(("api.proto",), "cri/api", grpc=True),
    Unit(("nri/api.proto", "nri/ttrpc.proto"), "cri/nri/api", grpc=False),
)


def _plugin(name: str) -> str:
    for d in (Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))):
        if (d / name).exists():
            return str(d / name)
    found = shutil.which(name)
    if not found:
        raise SystemExit(f"{name} not found: install the dev extras (mypy-protobuf)")
    return found


def _compile(unit: Unit, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "src", Path(tmp) / "out"
        (src / unit.package).mkdir(parents=True)
        dst.mkdir()
        names = []
        for source in unit.sources:
            name = f"{unit.package}/{Path(source).name}"
            shutil.copy(REPO / "proto" / source, src / name)
            names.append(name)
        include = Path(protoc.__file__).parent / "_proto"
        args = [
            "grpc_tools.protoc",
            f"-I{src}",
            f"-I{include}",
            f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
            f"--python_out={dst}",
            f"--mypy_out={dst}",
        ]
        if unit.grpc:
            args += [
                f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
                f"--grpc_python_out={dst}",
                f"--mypy_grpc_out={dst}",
            ]
        rc = protoc.main([*args, *names])
        if rc != 0:
            raise SystemExit(f"protoc failed with {rc}")
        for name in unit.outputs():
            shutil.copy(dst / unit.package / name, out / name)


def generate(root: Path) -> None:
    for unit in UNITS:
        _compile(unit, root / unit.package)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=REPO)
    generate(ap.parse_args().root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
