"""Version."""

from __future__ import annotations

from cri import __version__
from cri.api import api_pb2

KUBELET_API_VERSION = "0.1.0"  # the value every CRI runtime reports in VersionResponse.version


def version() -> api_pb2.VersionResponse:
    return api_pb2.VersionResponse(
        version=KUBELET_API_VERSION,
        runtime_name="pycri",
        runtime_version=__version__,
        runtime_api_version="v1",
    )
