"""pycri's own Prometheus metrics ([pycri.metrics]): what the daemon does, for the node's
operator. Not to be confused with cri/runtime/metrics.py, the CRI's ListPodSandboxMetrics
(the containers' cAdvisor metrics, which the kubelet re-exports)."""
