"""Container Device Interface (CDI): devices named ``vendor.com/class=name``, described by
vendors' spec files (JSON or YAML) as edits of a container's OCI spec.

names: qualified names and ``cdi.k8s.io/*`` annotations; spec: one spec file; registry: the
spec directories, re-read on change; inject: the edits realized and applied to an OCI spec.
"""
