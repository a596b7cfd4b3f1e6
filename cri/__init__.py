"""pycri: a Kubernetes CRI v1 container runtime."""

__version__ = "0.1.0"
