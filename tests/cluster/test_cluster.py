"""A kubeadm cluster on pycri, seen as a user sees it: through the API server and kubectl.

A Deployment rolls out and scales, a Service reaches its pods through kube-proxy from a pod and
from the node, CoreDNS resolves the service, kubectl exec, logs -f, port-forward and cp work
(the kubelet's streaming proxy in front of pycri's streaming server), and a pod deleted with a
grace period runs its preStop hook before its container gets SIGTERM.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import subprocess
from pathlib import Path

import pytest
from kubernetes import client

from tests.cluster.helpers import Cluster, exists, http_get, node_get, wait_for

POD_SUBNET = ipaddress.ip_network("10.244.0.0/24")
WEB_PORT = 8080
# Each web pod serves its own name: who answered is who the Service picked. The shell stays
# PID 1 to end on SIGTERM (httpd as PID 1 ignores it, and each pod scaled away would take its
# whole grace period).
WEB = (f"trap 'exit 0' TERM; mkdir -p /www && hostname > /www/index.html && "
       f"httpd -f -p {WEB_PORT} -h /www & wait")
SLEEP = "trap 'exit 0' TERM; while :; do sleep 1; done"


def container(c: Cluster, name: str, script: str, **kw: object) -> client.V1Container:
    return client.V1Container(name=name, image=c.image, image_pull_policy="Never",
                              command=["sh", "-c", script], **kw)


def labels(app: str) -> dict[str, str]:
    return {"app": app}


def run_pod(c: Cluster, name: str, spec: client.V1PodSpec) -> client.V1Pod:
    c.core.create_namespaced_pod(c.namespace, client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels=labels(name)), spec=spec))
    return wait_for(f"pod {name} to be ready", lambda: ready_pod(c, name))


def ready_pod(c: Cluster, name: str) -> client.V1Pod | None:
    pod = c.core.read_namespaced_pod(name, c.namespace)
    conds = {x.type: x.status for x in pod.status.conditions or []}
    return pod if pod.status.phase == "Running" and conds.get("Ready") == "True" else None


def app_pods(c: Cluster, app: str) -> list[client.V1Pod]:
    return list(c.core.list_namespaced_pod(c.namespace, label_selector=f"app={app}").items)


def ready_replicas(c: Cluster, app: str, n: int) -> list[client.V1Pod] | None:
    """Exactly n pods of the app, all running and ready (the ones scaled away gone)."""
    d = c.apps.read_namespaced_deployment(app, c.namespace)
    st = d.status
    if (st.observed_generation or 0) < d.metadata.generation or st.updated_replicas != n \
            or st.ready_replicas != n or st.available_replicas != n:
        return None
    pods = app_pods(c, app)
    if len(pods) != n or any(ready_pod(c, p.metadata.name) is None for p in pods):
        return None
    return pods


@pytest.fixture(scope="module")
def web(cluster: Cluster) -> str:
    c = cluster
    c.apps.create_namespaced_deployment(c.namespace, client.V1Deployment(
        metadata=client.V1ObjectMeta(name="web"),
        spec=client.V1DeploymentSpec(
            replicas=3, selector=client.V1LabelSelector(match_labels=labels("web")),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels("web")),
                spec=client.V1PodSpec(containers=[container(
                    c, "web", WEB, ports=[client.V1ContainerPort(container_port=WEB_PORT)],
                    readiness_probe=client.V1Probe(
                        http_get=client.V1HTTPGetAction(path="/", port=WEB_PORT),
                        period_seconds=2))])))))
    return "web"  # goes with the namespace


@pytest.fixture(scope="module")
def service_ip(cluster: Cluster, web: str) -> str:
    c = cluster
    svc = c.core.create_namespaced_service(c.namespace, client.V1Service(
        metadata=client.V1ObjectMeta(name="web"),
        spec=client.V1ServiceSpec(selector=labels(web), ports=[
            client.V1ServicePort(port=80, target_port=WEB_PORT)])))
    wait_for("3 replicas", lambda: ready_replicas(c, web, 3))
    wait_for("3 ready endpoints of service web", lambda: len(ready_endpoints(c, "web")) == 3)
    ip = str(svc.spec.cluster_ip)
    # kube-proxy writes its rules a moment after the endpoints change: until then the
    # ClusterIP answers with a reject.
    wait_for("kube-proxy's rules for web", lambda: node_get(c, f"http://{ip}/", quiet=True))
    return ip


def ready_endpoints(c: Cluster, service: str) -> list[str]:
    slices = c.discovery.list_namespaced_endpoint_slice(
        c.namespace, label_selector=f"kubernetes.io/service-name={service}").items
    return [a for s in slices for e in s.endpoints or [] if e.conditions.ready
            for a in e.addresses]


@pytest.fixture(scope="module")
def client_pod(cluster: Cluster) -> str:
    run_pod(cluster, "client", client.V1PodSpec(
        containers=[container(cluster, "client", SLEEP)], termination_grace_period_seconds=5))
    return "client"


# --- Deployment ---------------------------------------------------------------------------------


def test_deployment_rolls_out_and_scales(cluster: Cluster, web: str) -> None:
    c = cluster
    pods = wait_for("the rollout of 3 replicas", lambda: ready_replicas(c, web, 3))
    ips = {p.status.pod_ip for p in pods}
    assert len(ips) == 3 and all(ipaddress.ip_address(ip) in POD_SUBNET for ip in ips), ips
    assert {p.spec.node_name for p in pods} == {c.core.list_node().items[0].metadata.name}

    for n in (5, 3):
        c.apps.patch_namespaced_deployment_scale(web, c.namespace, {"spec": {"replicas": n}})
        pods = wait_for(f"{n} ready replicas", lambda n=n: ready_replicas(c, web, n))
        assert len({p.status.pod_ip for p in pods}) == n


# --- Service, kube-proxy, CoreDNS ---------------------------------------------------------------


def test_service_reaches_every_pod_from_the_node(cluster: Cluster, web: str,
                                                 service_ip: str) -> None:
    """The node's own traffic to the ClusterIP goes through kube-proxy's rules to each pod."""
    names = {p.metadata.name for p in wait_for("3 replicas", lambda: ready_replicas(cluster, web, 3))}
    seen: set[str] = set()
    for _ in range(100):  # kube-proxy picks a backend at random: all 3 show up long before
        seen.add(str(node_get(cluster, f"http://{service_ip}/")))
        if seen >= names:
            break
    assert seen == names


def test_service_and_dns_from_a_pod(cluster: Cluster, web: str, service_ip: str,
                                    client_pod: str) -> None:
    c = cluster
    names = {p.metadata.name for p in app_pods(c, web)}
    fqdn = f"web.{c.namespace}.svc.cluster.local"
    out = c.kubectl_ok("exec", client_pod, "--", "nslookup", fqdn)
    assert re.search(rf"Address:\s*{re.escape(service_ip)}\b", out), out
    # By the ClusterIP, by the short name (the pod's search path) and by the full name.
    for host in (service_ip, "web", fqdn):
        # (not wget -T: Debian 12's busybox 1.35 wget crashes with it when writing to stdout)
        answer = c.kubectl_ok("exec", client_pod, "--", "timeout", "30", "wget", "-q", "-O", "-",
                              f"http://{host}/").strip()
        assert answer in names, (host, answer)


# --- kubectl through the kubelet's streaming proxy --------------------------------------------


def test_kubectl_exec(cluster: Cluster, client_pod: str) -> None:
    c = cluster
    assert c.kubectl_ok("exec", client_pod, "--", "hostname").strip() == client_pod
    data = os.urandom(50_000).hex().encode()
    out = c.kubectl_ok("exec", "-i", client_pod, "--", "sh", "-c", "cat > /tmp/in; md5sum < /tmp/in",
                       input=data)
    assert out.split()[0] == hashlib.md5(data).hexdigest()
    done = c.run_kubectl("exec", client_pod, "--", "sh", "-c", "echo oops >&2; exit 3")
    assert done.returncode == 3 and b"oops" in done.stderr, done


def test_kubectl_logs_follow(cluster: Cluster) -> None:
    c = cluster
    run_pod(c, "ticker", client.V1PodSpec(termination_grace_period_seconds=5, containers=[
        container(c, "ticker", "trap 'exit 0' TERM; i=0; while :; do echo tick $i; "
                               "i=$((i+1)); sleep 1; done")]))
    wait_for("a first line", lambda: "tick" in c.kubectl_ok("logs", "ticker"))
    with subprocess.Popen([c.kubectl, "-n", c.namespace, "logs", "-f", "ticker"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as follow:
        assert follow.stdout is not None
        try:
            first = follow.stdout.readline().decode()
            assert first == "tick 0\n", first  # the log from its start...
            now = len(c.kubectl_ok("logs", "ticker").splitlines())
            got = [first]
            while len(got) < now + 3:  # ...and lines written after -f began
                line = follow.stdout.readline().decode()
                assert line, "kubectl logs -f ended"
                got.append(line)
            assert got == [f"tick {i}\n" for i in range(len(got))]
        finally:
            follow.kill()
    c.core.delete_namespaced_pod("ticker", c.namespace, grace_period_seconds=0)


def test_kubectl_port_forward(cluster: Cluster, web: str) -> None:
    c = cluster
    pod = app_pods(c, web)[0].metadata.name
    with subprocess.Popen([c.kubectl, "-n", c.namespace, "port-forward", f"pod/{pod}",
                           f":{WEB_PORT}", "--address", "127.0.0.1"],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as fwd:
        assert fwd.stdout is not None
        try:
            line = fwd.stdout.readline().decode()
            m = re.match(rf"Forwarding from 127\.0\.0\.1:(\d+) -> {WEB_PORT}", line)
            assert m, line
            for _ in range(3):  # each connection is a stream of its own in the same session
                assert http_get(f"http://127.0.0.1:{m.group(1)}/") == pod
        finally:
            fwd.terminate()


def test_kubectl_cp(cluster: Cluster, client_pod: str, tmp_path: Path) -> None:
    c = cluster
    src = tmp_path / "up.bin"
    src.write_bytes(os.urandom(300_000))
    c.kubectl_ok("cp", str(src), f"{client_pod}:/tmp/up.bin")
    out = c.kubectl_ok("exec", client_pod, "--", "md5sum", "/tmp/up.bin")
    assert out.split()[0] == hashlib.md5(src.read_bytes()).hexdigest()
    c.kubectl_ok("exec", client_pod, "--", "sh", "-c", "mkdir -p /tmp/d && echo made in pod > /tmp/d/f")
    c.kubectl_ok("cp", f"{client_pod}:/tmp/d", str(tmp_path / "down"))
    assert (tmp_path / "down" / "f").read_text() == "made in pod\n"


# --- graceful deletion ----------------------------------------------------------------------------


def test_prestop_hook_runs_before_sigterm(cluster: Cluster) -> None:
    """Deleted with a grace period: the kubelet runs the preStop hook (ExecSync through
    pycri), then stops the container with SIGTERM; both write to a folder of the node."""
    c = cluster
    out = c.hostpath / f"prestop-{c.namespace}"
    events = out / "events"
    run_pod(c, "stopper", client.V1PodSpec(
        termination_grace_period_seconds=60,
        volumes=[client.V1Volume(name="out", host_path=client.V1HostPathVolumeSource(
            path=str(out), type="DirectoryOrCreate"))],
        containers=[container(
            c, "stopper",
            "trap 'echo term >> /out/events; exit 0' TERM; echo started >> /out/events; "
            "while :; do sleep 1; done",
            volume_mounts=[client.V1VolumeMount(name="out", mount_path="/out")],
            lifecycle=client.V1Lifecycle(pre_stop=client.V1LifecycleHandler(
                _exec=client.V1ExecAction(command=["sh", "-c", "echo prestop >> /out/events"]))))]))
    wait_for("the container's first line", lambda: events.is_file() and events.read_text())
    c.core.delete_namespaced_pod("stopper", c.namespace, grace_period_seconds=30)
    wait_for("pod stopper to go",
             lambda: not exists(lambda: c.core.read_namespaced_pod("stopper", c.namespace)))
    assert events.read_text().split() == ["started", "prestop", "term"]
