"""A real multi-node Ray cluster on this machine: a head and three worker nodes (separate raylets,
fractional CPUs), the Serve app on it, and slides read from a real S3-compatible server.

The module runs first in `make test` (tests/cluster sorts first): it needs a Ray of its own, which
it shuts down at the end for the other modules' local Ray.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import _free_port

MODELS_NODE = "cnn_node"  # custom resource: the worker node that hosts every Serve replica


def _options(autoscale: bool = False) -> dict[str, dict]:
    """Every deployment on the models node (so losing a reader node loses no replica)."""
    pin = {"resources": {MODELS_NODE: 0.01}}
    cnn: dict = {"max_ongoing_requests": 16, "ray_actor_options": {"num_cpus": 0.2, **pin}}
    if autoscale:
        cnn["autoscaling_config"] = {
            "min_replicas": 1,
            "max_replicas": 2,
            "target_ongoing_requests": 1,
            "upscale_delay_s": 0.5,
            "downscale_delay_s": 10,
            "look_back_period_s": 1,
            "metrics_interval_s": 0.5,
        }
    else:
        cnn["num_replicas"] = 1
    small = {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0.1, **pin}}
    return {"mobilenet": cnn, "xception": cnn, "inception_v3": cnn, "Ensemble": small, "Ingress": small}


def _new_cluster(readers: int = 2) -> dict:
    """A head and worker nodes: `readers` of them for reading and one for every Serve replica."""
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    readers = [c.add_node(num_cpus=1, resources={"reader": 1}) for _ in range(readers)]
    models = c.add_node(num_cpus=2, resources={MODELS_NODE: 1})
    c.wait_for_nodes()
    return {"cluster": c, "readers": readers, "models": models}


@pytest.fixture(scope="module")
def cluster(s3_server, tmp_path_factory):
    import ray

    if ray.is_initialized():
        pytest.fail("the cluster tests need a Ray of their own: run them first (as `make test` does)")
    # Serve's replicas and handles report load every 10 s by default; a test burst is shorter.
    for var in (
        "RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S",
        "RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S",
    ):
        os.environ[var] = "0.5"
    address = os.environ.get("RAY_ADDRESS")
    state = _new_cluster()
    from wbc_ray.pipeline import init_ray

    init_ray(address=state["cluster"].address)
    yield state
    from ray import serve

    serve.shutdown()
    ray.shutdown()
    c = state["cluster"]  # the test that restarts the service replaces it
    for node in [*c.worker_nodes, c.head_node]:  # every raylet of it, even if one refuses
        with contextlib.suppress(ValueError):
            c.remove_node(node)
    # ray.init(address=...) exported the address for child processes; the other modules' local
    # Ray must not try to join this cluster.
    if address is None:
        os.environ.pop("RAY_ADDRESS", None)
    else:
        os.environ["RAY_ADDRESS"] = address


def _start(app: dict, models_dir: Path, autoscale: bool = False) -> None:
    from wbc_ray.serve import start

    start(
        port=app["port"],
        settings=str(app["settings"]),
        models_dir=str(models_dir),
        results_dir=str(app["root"] / "results"),
        slide_roots=[str(app["root"])],
        deployment_options=_options(autoscale),
    )
    _wait(lambda: httpx.get(f"{app['base']}/health", timeout=5).status_code == 200, 180)


@pytest.fixture(scope="module")
def app(cluster, models_dir, tmp_path_factory):
    """The Serve app on the cluster; analyses in small work units so a slide has many."""
    root = tmp_path_factory.mktemp("cluster")
    settings = root / "settings.yaml"
    settings.write_text("analysis:\n  chunk_tiles: 32\n  score_tasks: 4\n")
    port = _free_port()
    app = {"base": f"http://127.0.0.1:{port}", "root": root, "settings": settings, "port": port}
    _start(app, models_dir)
    return app


@pytest.fixture(scope="module")
def small_slides(app, test_items) -> list[Path]:
    """Three slides of about 340 tiles each, for a burst."""
    from wbc_ray.slides import compose_slide

    out = []
    for i in range(3):
        out.append(app["root"] / f"burst{i}.tiff")
        compose_slide(test_items, out[-1], grid=(16, 16), malignant_fraction=0.3, seed=20 + i)
    return out


@pytest.fixture(scope="module")
def slide(app, test_items) -> Path:
    """A composed slide of about 430 tiles: some 14 work units of 32."""
    from wbc_ray.slides import compose_slide

    out = app["root"] / "cluster.tiff"
    compose_slide(test_items, out, grid=(18, 18), malignant_fraction=0.3, seed=11)
    return out


def _wait(ok, timeout: float, step: float = 0.5) -> None:  # type: ignore[no-untyped-def]
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if ok():
                return
        except Exception:
            pass
        time.sleep(step)
    raise AssertionError(f"not reached within {timeout} s")


def _submit(base: str, path: Path) -> str:
    r = httpx.post(f"{base}/jobs", json={"path": str(path)}, timeout=60)
    assert r.status_code == 202, r.text
    return str(r.json()["job_id"])


def _finish(base: str, job: str, timeout: float = 300) -> dict:
    out: dict = {}

    def done() -> bool:
        out.update(httpx.get(f"{base}/jobs/{job}", timeout=30).json())
        return out["status"] in {"done", "failed"}

    _wait(done, timeout)
    assert out["status"] == "done", out.get("error", out)
    return out


def _progress(app, job: str) -> int:
    return int(httpx.get(f"{app['base']}/jobs/{job}", timeout=30).json()["progress"]["done"] or 0)


def _store(app, job: str):  # type: ignore[no-untyped-def]
    from wbc_ray.store import open_store

    return open_store(app["root"] / "results" / "jobs" / f"{job}.zarr")


def _fused(store) -> np.ndarray:  # type: ignore[no-untyped-def]
    from wbc_ray.store import array

    return np.asarray(array(store, "fused")[:])


@pytest.fixture(scope="module")
def baseline(app, slide) -> dict:
    """One undisturbed run: the scores every other run must reproduce, and where it ran."""
    job = _submit(app["base"], slide)
    _finish(app["base"], job)
    store = _store(app, job)
    return {"job": job, "fused": _fused(store), "attrs": dict(store.attrs)}


def test_tiles_are_read_on_several_nodes_and_scored_on_the_models_node(cluster, baseline) -> None:
    nodes = baseline["attrs"]["timings"]["nodes"]
    models_node = cluster["models"].node_id
    reads = nodes["read"]
    assert len(reads) >= 2, reads  # read tasks spread over more than one node
    assert sum(reads.values()) == len(baseline["fused"])
    assert set(nodes["score"]) == {"mobilenet", "xception", "inception_v3"}
    for model, where in nodes["score"].items():
        assert set(where) == {models_node}, (model, where)
    assert set(reads) - {models_node}, "tiles were also read off the models node"


def test_a_reader_node_lost_mid_slide_still_scores_every_tile_once(app, cluster, slide, baseline) -> None:
    from wbc_ray.store import array

    c = cluster["cluster"]
    job = _submit(app["base"], slide)
    # Once a few units are done, take away one of the reader nodes, raylet and all.
    _wait(lambda: _progress(app, job) >= 64, 120, 0.1)
    victim = cluster["readers"][0]
    c.remove_node(victim, allow_graceful=False)
    assert _progress(app, job) < len(baseline["fused"]), "the slide was over before the node was lost"
    try:
        _finish(app["base"], job)
        store = _store(app, job)
        writes = np.asarray(array(store, "writes")[:])
        assert (writes == 1).all(), np.bincount(writes)
        print("reads per node with one lost:", dict(store.attrs)["timings"]["nodes"]["read"], victim.node_id)
        np.testing.assert_array_equal(_fused(store), baseline["fused"])
        assert (
            dict(store.attrs)["result"]["malignant_fraction"]
            == baseline["attrs"]["result"]["malignant_fraction"]
        )
    finally:
        cluster["readers"][0] = c.add_node(num_cpus=1, resources={"reader": 1})
        c.wait_for_nodes()


def test_a_cnn_replica_killed_mid_slide_is_replaced_and_the_job_finishes(app, slide, baseline) -> None:
    import ray
    from ray import serve

    cnn = serve.get_deployment_handle("inception_v3", app_name="wbc-ray")
    before = cnn.stats.remote().result()
    job = _submit(app["base"], slide)
    _wait(lambda: _progress(app, job) > 0, 120, 0.1)
    ray.kill(ray.get_actor(before["actor"], namespace="serve"), no_restart=True)
    _finish(app["base"], job)
    np.testing.assert_array_equal(_fused(_store(app, job)), baseline["fused"])
    # Serve brought a new replica up in its place, and it is the one answering now.
    assert cnn.stats.remote().result()["actor"] != before["actor"]


def test_slides_and_results_by_s3_uri_on_every_node(app, slide, baseline, s3_server) -> None:
    import fsspec

    from wbc_ray.analyze import analyze_slides
    from wbc_ray.store import array, open_store

    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    fs.mkdir("wbc-slides")
    fs.mkdir("wbc-results")
    fs.put_file(str(slide), "wbc-slides/in/cluster.tiff")
    from wbc_ray.config import load_settings

    (r,) = analyze_slides(
        ["s3://wbc-slides/in/cluster.tiff"],
        models_dir=str(load_settings().models_dir),
        out_dir="s3://wbc-results/run",
        settings=load_settings(app["settings"]),
        progress=False,
    )
    assert r.ok, r.error
    assert r.store == "s3://wbc-results/run/cluster.tiff.zarr"
    store = open_store(r.store)
    np.testing.assert_array_equal(np.asarray(array(store, "fused")[:]), baseline["fused"])
    assert len(dict(store.attrs)["timings"]["nodes"]["read"]) >= 2  # fetched and read on several nodes
    assert fs.exists("wbc-results/run/cluster.tiff.json") and fs.exists(
        "wbc-results/run/cluster.tiff.heatmap.png"
    )
    # The credentials are in no record and no log of the cluster.
    record = (
        fs.cat("wbc-results/run/cluster.tiff.json").decode()
        + fs.cat("wbc-results/run/cluster.tiff.zarr/zarr.json").decode()
    )
    assert "s3://wbc-slides/in/cluster.tiff" in record and s3_server not in record
    import ray

    logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"
    leaked = [p.name for p in logs.rglob("*") if p.is_file() and s3_server.encode() in p.read_bytes()]
    assert not leaked, leaked


def test_a_service_restarted_mid_slide_requeues_and_finishes_the_same(
    app, cluster, models_dir, slide, baseline
) -> None:
    """Ray and Serve killed while one slide runs and one waits; started again on the same results
    folder, the service queues both again and they end as an undisturbed run does."""
    import ray

    from wbc_ray.pipeline import init_ray
    from wbc_ray.serve import ServiceDB

    running = _submit(app["base"], slide)
    waiting = _submit(app["base"], slide)
    _wait(lambda: _progress(app, running) >= 64, 120, 0.1)
    assert _progress(app, running) < len(baseline["fused"]), "the slide was over before the restart"
    # Killed, not stopped: the driver leaves, then every raylet of the cluster goes at once.
    ray.shutdown()
    old = cluster["cluster"]
    for node in [*old.worker_nodes, old.head_node]:
        with contextlib.suppress(ValueError):
            old.remove_node(node, allow_graceful=False)
    db = ServiceDB(app["root"] / "results" / "service.db")
    assert db.job(running)["status"] == "running" and db.job(waiting)["status"] == "queued"
    # The new cluster without the reader nodes (the tests that read on several nodes ran before):
    # on 2 cores every node started is seconds of CPU.
    fresh = _new_cluster(readers=0)
    cluster.update(fresh)
    init_ray(address=fresh["cluster"].address)
    _start(app, models_dir)
    for job in (running, waiting):
        _finish(app["base"], job, timeout=400)
        np.testing.assert_array_equal(_fused(_store(app, job)), baseline["fused"])
    assert db.job(running)["attempts"] == 2 and db.job(waiting)["attempts"] == 1


def test_autoscaling_raises_replicas_under_a_burst_and_lowers_them_after(
    app, cluster, models_dir, small_slides
) -> None:
    from ray import serve

    _start(app, models_dir, autoscale=True)

    def running(name: str) -> int:
        """Replicas Serve keeps for `name`: running ones and ones it is starting (a new CNN
        replica loads for some seconds on a busy 2-core machine)."""
        states = dict(serve.status().applications["wbc-ray"].deployments[name].replica_states)
        return int(states.get("RUNNING", 0)) + int(states.get("STARTING", 0))

    _wait(lambda: running("mobilenet") == 1, 120)
    peak = {"mobilenet": 1, "xception": 1, "inception_v3": 1}
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            for name in peak:
                with contextlib.suppress(Exception):  # status is briefly unreadable during updates
                    peak[name] = max(peak[name], running(name))
            time.sleep(0.3)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    jobs = [_submit(app["base"], s) for s in small_slides]

    def scaled_or_over() -> bool:
        if max(peak.values()) == 2:
            return True
        states = [httpx.get(f"{app['base']}/jobs/{j}", timeout=30).json()["status"] for j in jobs]
        return all(st in {"done", "failed"} for st in states)

    _wait(scaled_or_over, 600)
    assert max(peak.values()) == 2, peak  # a burst of slides scaled some CNN up
    # The burst has done its part: what is still queued or running is cancelled, not waited for.
    for job in jobs:
        assert httpx.delete(f"{app['base']}/jobs/{job}", timeout=60).status_code == 200
    # ...and once it is over, every CNN goes back to its minimum.
    _wait(lambda: all(running(n) == 1 for n in peak), 120)
    stop.set()
    watcher.join()
