"""OCI runtime layer: spec builder, conmon + runc driver, exit watcher."""

from sandbox.oci.errors import OCINotFound, OCINotRunning, OCIRuntimeError, OCITimeout
from sandbox.oci.exits import ExitWatcher
from sandbox.oci.runtime import OCIRuntime
from sandbox.oci.spec import Spec, infra_spec, write_bundle

__all__ = [
    "ExitWatcher",
    "OCINotFound",
    "OCINotRunning",
    "OCIRuntime",
    "OCIRuntimeError",
    "OCITimeout",
    "Spec",
    "infra_spec",
    "write_bundle",
]
