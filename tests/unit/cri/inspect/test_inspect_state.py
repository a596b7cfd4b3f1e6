from __future__ import annotations

from pathlib import Path

import pytest

from cri.inspect.state import InspectError, load_containers, load_pods, resolve
from tests.unit.cri.inspect.fakes import write_container, write_pod

POD_A = "aa11" + "0" * 60
POD_B = "ab22" + "0" * 60
CTR_A = "ac33" + "1" * 60
CTR_B = "bb44" + "1" * 60


@pytest.fixture
def root(tmp_path: Path) -> Path:
    write_pod(tmp_path, POD_A, name="web", namespace="shop")
    write_pod(tmp_path, POD_B, name="db", namespace="shop")
    write_container(tmp_path, CTR_A, POD_A, name="nginx")
    write_container(tmp_path, CTR_B, POD_A, name="sidecar")
    return tmp_path


def find(root: Path, query: str) -> tuple[str, str | None, list[str]]:
    t = resolve(query, load_pods(root), load_containers(root))
    return (t.pod.id, t.container.id if t.container else None,
            [c.name for c in t.containers])


def test_a_pod_by_id_prefix_or_name_with_its_containers(root: Path) -> None:
    assert find(root, POD_A) == (POD_A, None, ["nginx", "sidecar"])
    assert find(root, "aa") == (POD_A, None, ["nginx", "sidecar"])
    assert find(root, "shop/db") == (POD_B, None, [])


def test_a_container_by_id_or_prefix_comes_with_its_pod(root: Path) -> None:
    assert find(root, CTR_B) == (POD_A, CTR_B, ["nginx", "sidecar"])
    assert find(root, "bb") == (POD_A, CTR_B, ["nginx", "sidecar"])


def test_records_keep_what_the_client_named(root: Path) -> None:
    pod = load_pods(root)[POD_A]
    assert (pod.namespace, pod.name, pod.state, pod.pid, pod.ips) == (
        "shop", "web", "ready", 100, ["10.0.0.5"])
    ctr = load_containers(root)[CTR_A]
    assert (ctr.name, ctr.pod_id, ctr.pid, ctr.pid_namespace) == (
        "nginx", POD_A, 200, "container")


def test_an_ambiguous_prefix_lists_every_candidate_pods_and_containers(root: Path) -> None:
    with pytest.raises(InspectError) as err:
        find(root, "a")
    msg = str(err.value)
    assert "ambiguous" in msg
    for ident in (POD_A, POD_B, CTR_A):
        assert ident in msg
    assert CTR_B not in msg


def test_unknown_names_say_so(root: Path) -> None:
    with pytest.raises(InspectError, match="no pod or container 'ff'"):
        find(root, "ff")
    with pytest.raises(InspectError, match="no pod named 'shop/cart'"):
        find(root, "shop/cart")
    with pytest.raises(InspectError, match="no pod or container named"):
        find(root, "")


def test_two_pods_of_one_name_are_ambiguous(tmp_path: Path) -> None:
    write_pod(tmp_path, POD_A, name="web", namespace="shop")
    write_pod(tmp_path, POD_B, name="web", namespace="shop")
    with pytest.raises(InspectError) as err:
        find(tmp_path, "shop/web")
    assert POD_A in str(err.value) and POD_B in str(err.value)


def test_unfinished_records_are_skipped_and_left_alone(tmp_path: Path) -> None:
    # No status.json: a creation a crash interrupted. The daemon's start-up removes it; an
    # inspection must neither show it nor touch it.
    write_pod(tmp_path, POD_A, status=False)
    (tmp_path / "sandboxes" / "garbage").mkdir()
    assert load_pods(tmp_path) == {}
    assert (tmp_path / "sandboxes" / POD_A / "meta.json").exists()
    assert (tmp_path / "sandboxes" / "garbage").is_dir()
    assert load_containers(tmp_path) == {}  # no containers dir at all


def test_a_container_whose_pod_is_unreadable_is_an_error(tmp_path: Path) -> None:
    write_container(tmp_path, CTR_A, POD_A)
    with pytest.raises(InspectError, match="its pod"):
        find(tmp_path, CTR_A)
