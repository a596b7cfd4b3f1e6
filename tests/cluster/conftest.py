"""Fixtures for the smoke test of a kubeadm cluster on pycri (made by hack/k8s/cluster.sh, which
runs this folder by its path; a bare `pytest` leaves it out, see pyproject.toml).

The script hands over, in the environment: KUBECONFIG (the cluster's admin.conf),
PYCRI_CLUSTER_KUBECTL (kubectl of the same release), PYCRI_CLUSTER_IMAGE (a busybox image it
imported into pycri) and PYCRI_CLUSTER_HOSTPATH (a folder of the node the pods may write to);
PYCRI_CLUSTER_PODS, if set, is where `kubectl get pods -A -o wide` is written at the end;
PYCRI_CLUSTER_NODE_EXEC, if set, is the command that runs a command on the node when this test
runs elsewhere (kind/test.sh: `docker exec NODE`; the node must see PYCRI_CLUSTER_HOSTPATH at the
same path).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from tests.cluster.helpers import Cluster, exists, need, wait_for


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    config.load_kube_config(need("KUBECONFIG"))
    core = client.CoreV1Api()
    ns = f"pycri-smoke-{uuid.uuid4().hex[:6]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    # A new namespace gets its default service account from the controller manager; pods
    # are refused until it exists.
    wait_for("the namespace's default service account",
             lambda: exists(lambda: core.read_namespaced_service_account("default", ns)))
    yield Cluster(core, client.AppsV1Api(), client.DiscoveryV1Api(), ns,
                  need("PYCRI_CLUSTER_IMAGE"), need("PYCRI_CLUSTER_KUBECTL"),
                  Path(need("PYCRI_CLUSTER_HOSTPATH")),
                  tuple(shlex.split(os.environ.get("PYCRI_CLUSTER_NODE_EXEC", ""))))
    listing = os.environ.get("PYCRI_CLUSTER_PODS", "")
    if listing:  # what ran, for the script's summary, before it goes
        with open(listing, "wb") as out:
            subprocess.run([need("PYCRI_CLUSTER_KUBECTL"), "get", "pods", "-A", "-o", "wide"],
                           stdout=out, stderr=subprocess.STDOUT, timeout=60, check=False)
    # The kubelet stops and removes every pod of the namespace (through pycri) before the
    # namespace goes: what is left after that is for the teardown to find.
    core.delete_namespace(ns)
    wait_for(f"namespace {ns} to go", lambda: not exists(lambda: core.read_namespace(ns)))

