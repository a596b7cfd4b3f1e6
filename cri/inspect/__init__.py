"""``pycri inspect POD|CONTAINER``: what a pod's processes share, where their cgroups are and
what limits the kernel holds for them, and how the pod is wired to the host's network.

Everything is read from the daemon's state files, /proc, the cgroup tree and the pod's network
namespace, never through the daemon's socket: it answers while the daemon is down, which is when
an operator needs it most. Nothing here writes anything.
"""
