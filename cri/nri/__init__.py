"""NRI (Node Resource Interface): the runtime side of containerd/nri's plugin protocol.

Transport, bottom up:
- ``api/``: the NRI messages and ttrpc's envelope, generated from proto/nri/.
- ``ttrpc_frames``, ``ttrpc_client_proto``, ``ttrpc_server_proto``: ttrpc as sans-IO state machines.
- ``mux_frames``: the multiplexer that splits one plugin connection into logical connections.
- ``transport``, ``mux``, ``ttrpc_client``, ``ttrpc_server``: their asyncio drivers.
"""
