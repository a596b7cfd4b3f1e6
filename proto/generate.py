"""Regenerate cri/api/ from proto/api.proto: message classes, gRPC stubs and typed .pyi files.

    .venv/bin/python proto/generate.py [--out DIR]

The proto is compiled as cri/api/api.proto so that the generated modules import each other as
``cri.api.api_pb2`` (package-absolute). Output is deterministic: the same input gives
byte-identical files, which a unit test checks against the committed ones.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import sysconfig
import tempfile
from pathlib import Path

from grpc_tools import protoc  # type: ignore[import-untyped]

REPO = Path(__file__).resolve().parents[1]
PROTO = REPO / "proto" / "api.proto"
OUTPUTS = ("api_pb2.py", "api_pb2.pyi", "api_pb2_grpc.py", "api_pb2_grpc.pyi")


def _plugin(name: str) -> str:
    for d in (Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))):
        if (d / name).exists():
            return str(d / name)
    found = shutil.which(name)
    if not found:
        raise SystemExit(f"{name} not found: install the dev extras (mypy-protobuf)")
    return found


def generate(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "src", Path(tmp) / "out"
        (src / "cri" / "api").mkdir(parents=True)
        dst.mkdir()
        shutil.copy(PROTO, src / "cri" / "api" / "api.proto")
        include = Path(protoc.__file__).parent / "_proto"
        rc = protoc.main([
            "grpc_tools.protoc",
            f"-I{src}",
            f"-I{include}",
            f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
            f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
            f"--python_out={dst}",
            f"--grpc_python_out={dst}",
            f"--mypy_out={dst}",
            f"--mypy_grpc_out={dst}",
            "cri/api/api.proto",
        ])
        if rc != 0:
            raise SystemExit(f"protoc failed with {rc}")
        for name in OUTPUTS:
            shutil.copy(dst / "cri" / "api" / name, out / name)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "cri" / "api")
    generate(ap.parse_args().out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
