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
    container_create,
    container_exec,
    container_exec_sync,
    container_list,
    container_log_reopen,
    container_remove,
    container_start,
    container_status,
    container_stop,
    container_update,
    metrics,
    runtime_config,
    runtime_status,
    sandbox_list,
    sandbox_remove,
    sandbox_run,
    sandbox_status,
    sandbox_stop,
    stats,
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

    # Containers ---------------------------------------------------------------------------
    async def CreateContainer(self, request: api_pb2.CreateContainerRequest, context: Ctx
                              ) -> api_pb2.CreateContainerResponse:
        ctr_id = await container_create.create_container(self.rt, request.pod_sandbox_id,
                                                         request.config)
        return api_pb2.CreateContainerResponse(container_id=ctr_id)

    async def StartContainer(self, request: api_pb2.StartContainerRequest, context: Ctx
                             ) -> api_pb2.StartContainerResponse:
        await container_start.start_container(self.rt, request.container_id)
        return api_pb2.StartContainerResponse()

    async def StopContainer(self, request: api_pb2.StopContainerRequest, context: Ctx
                            ) -> api_pb2.StopContainerResponse:
        await container_stop.stop_container(self.rt, request.container_id, request.timeout)
        return api_pb2.StopContainerResponse()

    async def RemoveContainer(self, request: api_pb2.RemoveContainerRequest, context: Ctx
                              ) -> api_pb2.RemoveContainerResponse:
        await container_remove.remove_container(self.rt, request.container_id)
        return api_pb2.RemoveContainerResponse()

    async def ContainerStatus(self, request: api_pb2.ContainerStatusRequest, context: Ctx
                              ) -> api_pb2.ContainerStatusResponse:
        return container_status.container_status(self.rt, request.container_id, request.verbose)

    async def ListContainers(self, request: api_pb2.ListContainersRequest, context: Ctx
                             ) -> api_pb2.ListContainersResponse:
        f = request.filter if request.HasField("filter") else None
        # Pre-encoded bytes (see cri/encoded.py); the interceptor sends them as they are.
        return container_list.list_containers_encoded(self.rt, f)  # type: ignore[return-value]

    async def StreamContainers(self, request: api_pb2.StreamContainersRequest, context: Ctx
                               ) -> AsyncIterator[api_pb2.StreamContainersResponse]:
        f = request.filter if request.HasField("filter") else None
        items = container_list.list_containers(self.rt, f)
        for i in range(0, len(items), STREAM_BATCH):
            yield api_pb2.StreamContainersResponse(containers=items[i:i + STREAM_BATCH])

    async def ExecSync(self, request: api_pb2.ExecSyncRequest, context: Ctx
                       ) -> api_pb2.ExecSyncResponse:
        return await container_exec_sync.exec_sync_rpc(self.rt, request.container_id,
                                                       list(request.cmd), request.timeout)

    async def UpdateContainerResources(self, request: api_pb2.UpdateContainerResourcesRequest,
                                       context: Ctx) -> api_pb2.UpdateContainerResourcesResponse:
        await container_update.update_container_resources(self.rt, request.container_id,
                                                          request.linux)
        return api_pb2.UpdateContainerResourcesResponse()

    async def UpdatePodSandboxResources(self, request: api_pb2.UpdatePodSandboxResourcesRequest,
                                        context: Ctx
                                        ) -> api_pb2.UpdatePodSandboxResourcesResponse:
        await container_update.update_pod_sandbox_resources(self.rt, request.pod_sandbox_id,
                                                            request.resources)
        return api_pb2.UpdatePodSandboxResourcesResponse()

    async def Exec(self, request: api_pb2.ExecRequest, context: Ctx) -> api_pb2.ExecResponse:
        return api_pb2.ExecResponse(url=container_exec.exec_url(
            self.rt, request.container_id, list(request.cmd), request.tty, request.stdin,
            request.stdout, request.stderr))

    async def Attach(self, request: api_pb2.AttachRequest, context: Ctx
                     ) -> api_pb2.AttachResponse:
        return api_pb2.AttachResponse(url=container_exec.attach_url(
            self.rt, request.container_id, request.tty, request.stdin, request.stdout,
            request.stderr))

    async def PortForward(self, request: api_pb2.PortForwardRequest, context: Ctx
                          ) -> api_pb2.PortForwardResponse:
        return api_pb2.PortForwardResponse(
            url=container_exec.port_forward_url(self.rt, request.pod_sandbox_id, request.port))

    async def ReopenContainerLog(self, request: api_pb2.ReopenContainerLogRequest, context: Ctx
                                 ) -> api_pb2.ReopenContainerLogResponse:
        await container_log_reopen.reopen_container_log(self.rt, request.container_id)
        return api_pb2.ReopenContainerLogResponse()

    # Stats --------------------------------------------------------------------------------
    async def ContainerStats(self, request: api_pb2.ContainerStatsRequest, context: Ctx
                             ) -> api_pb2.ContainerStatsResponse:
        return api_pb2.ContainerStatsResponse(
            stats=await stats.container_stats(self.rt, request.container_id))

    async def ListContainerStats(self, request: api_pb2.ListContainerStatsRequest, context: Ctx
                                 ) -> api_pb2.ListContainerStatsResponse:
        f = request.filter if request.HasField("filter") else None
        return api_pb2.ListContainerStatsResponse(
            stats=await stats.list_container_stats(self.rt, f))

    async def StreamContainerStats(self, request: api_pb2.StreamContainerStatsRequest,
                                   context: Ctx
                                   ) -> AsyncIterator[api_pb2.StreamContainerStatsResponse]:
        f = request.filter if request.HasField("filter") else None
        items = await stats.list_container_stats(self.rt, f)
        for i in range(0, len(items), STREAM_BATCH):
            yield api_pb2.StreamContainerStatsResponse(container_stats=items[i:i + STREAM_BATCH])

    async def PodSandboxStats(self, request: api_pb2.PodSandboxStatsRequest, context: Ctx
                              ) -> api_pb2.PodSandboxStatsResponse:
        return api_pb2.PodSandboxStatsResponse(
            stats=await stats.pod_sandbox_stats(self.rt, request.pod_sandbox_id))

    async def ListPodSandboxStats(self, request: api_pb2.ListPodSandboxStatsRequest,
                                  context: Ctx) -> api_pb2.ListPodSandboxStatsResponse:
        f = request.filter if request.HasField("filter") else None
        return api_pb2.ListPodSandboxStatsResponse(
            stats=await stats.list_pod_sandbox_stats(self.rt, f))

    async def StreamPodSandboxStats(self, request: api_pb2.StreamPodSandboxStatsRequest,
                                    context: Ctx
                                    ) -> AsyncIterator[api_pb2.StreamPodSandboxStatsResponse]:
        f = request.filter if request.HasField("filter") else None
        items = await stats.list_pod_sandbox_stats(self.rt, f)
        for i in range(0, len(items), STREAM_BATCH):
            yield api_pb2.StreamPodSandboxStatsResponse(
                pod_sandbox_stats=items[i:i + STREAM_BATCH])

    # Metrics ------------------------------------------------------------------------------
    async def ListMetricDescriptors(self, request: api_pb2.ListMetricDescriptorsRequest,
                                    context: Ctx) -> api_pb2.ListMetricDescriptorsResponse:
        return api_pb2.ListMetricDescriptorsResponse(
            descriptors=metrics.list_metric_descriptors())

    async def ListPodSandboxMetrics(self, request: api_pb2.ListPodSandboxMetricsRequest,
                                    context: Ctx) -> api_pb2.ListPodSandboxMetricsResponse:
        return api_pb2.ListPodSandboxMetricsResponse(
            pod_metrics=await metrics.list_pod_sandbox_metrics(self.rt))

    async def StreamPodSandboxMetrics(self, request: api_pb2.StreamPodSandboxMetricsRequest,
                                      context: Ctx
                                      ) -> AsyncIterator[api_pb2.StreamPodSandboxMetricsResponse]:
        items = await metrics.list_pod_sandbox_metrics(self.rt)
        for i in range(0, len(items), STREAM_BATCH):
            yield api_pb2.StreamPodSandboxMetricsResponse(
                pod_sandbox_metrics=items[i:i + STREAM_BATCH])

    async def GetContainerEvents(self, request: api_pb2.GetEventsRequest, context: Ctx
                                 ) -> AsyncIterator[api_pb2.ContainerEventResponse]:
        async for event in self.rt.events.subscribe():
            yield event


fill_unimplemented(RuntimeServicer, "RuntimeService")
