"""RuntimeService servicer: thin - unpack the request, call the RPC's module, pack the reply.

Errors are raised as CRIError and mapped to status codes by the interceptor; RPCs a later piece
of work implements answer UNIMPLEMENTED naming themselves.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from cri.api import api_pb2, api_pb2_grpc
from cri.runtime import (
    runtime_config,
    runtime_status,
    sandbox_list,
    sandbox_remove,
    sandbox_run,
    sandbox_status,
    sandbox_stop,
    version,
)
from cri.runtime.daemon import Runtime
from cri.runtime.unimplemented import fill_unimplemented

Ctx = grpc.aio.ServicerContext[Any, Any]
STREAM_BATCH = 100  # items per Stream* message: bounded messages however many pods there are


class RuntimeServicer(api_pb2_grpc.RuntimeServiceServicer):
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    async def Version(self, request: api_pb2.VersionRequest, context: Ctx
                      ) -> api_pb2.VersionResponse:
        return version.version()

    async def Status(self, request: api_pb2.StatusRequest, context: Ctx
                     ) -> api_pb2.StatusResponse:
        return runtime_status.status(self.rt, request.verbose)

    async def RuntimeConfig(self, request: api_pb2.RuntimeConfigRequest, context: Ctx
                            ) -> api_pb2.RuntimeConfigResponse:
        return runtime_config.runtime_config(self.rt)

    async def UpdateRuntimeConfig(self, request: api_pb2.UpdateRuntimeConfigRequest,
                                  context: Ctx) -> api_pb2.UpdateRuntimeConfigResponse:
        runtime_config.update_runtime_config(self.rt, request.runtime_config)
        return api_pb2.UpdateRuntimeConfigResponse()

    async def RunPodSandbox(self, request: api_pb2.RunPodSandboxRequest, context: Ctx
                            ) -> api_pb2.RunPodSandboxResponse:
        pod_id = await sandbox_run.run_pod_sandbox(self.rt, request.config,
                                                   request.runtime_handler)
        return api_pb2.RunPodSandboxResponse(pod_sandbox_id=pod_id)

    async def StopPodSandbox(self, request: api_pb2.StopPodSandboxRequest, context: Ctx
                             ) -> api_pb2.StopPodSandboxResponse:
        await sandbox_stop.stop_pod_sandbox(self.rt, request.pod_sandbox_id)
        return api_pb2.StopPodSandboxResponse()

    async def RemovePodSandbox(self, request: api_pb2.RemovePodSandboxRequest, context: Ctx
                               ) -> api_pb2.RemovePodSandboxResponse:
        await sandbox_remove.remove_pod_sandbox(self.rt, request.pod_sandbox_id)
        return api_pb2.RemovePodSandboxResponse()

    async def PodSandboxStatus(self, request: api_pb2.PodSandboxStatusRequest, context: Ctx
                               ) -> api_pb2.PodSandboxStatusResponse:
        return sandbox_status.pod_sandbox_status(self.rt, request.pod_sandbox_id,
                                                 request.verbose)

    async def ListPodSandbox(self, request: api_pb2.ListPodSandboxRequest, context: Ctx
                             ) -> api_pb2.ListPodSandboxResponse:
        f = request.filter if request.HasField("filter") else None
        return api_pb2.ListPodSandboxResponse(items=sandbox_list.list_pod_sandbox(self.rt, f))

    async def StreamPodSandboxes(self, request: api_pb2.StreamPodSandboxesRequest, context: Ctx
                                 ) -> AsyncIterator[api_pb2.StreamPodSandboxesResponse]:
        f = request.filter if request.HasField("filter") else None
        items = sandbox_list.list_pod_sandbox(self.rt, f)
        for i in range(0, len(items), STREAM_BATCH):
            yield api_pb2.StreamPodSandboxesResponse(pod_sandboxes=items[i:i + STREAM_BATCH])


fill_unimplemented(RuntimeServicer, "RuntimeService")
