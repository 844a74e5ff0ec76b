"""`run --engine ray` on Ray's own two-node cluster on 127.0.0.1 (issue #19): the same counts as the local engine bit
for bit, a worker killed mid-sweep costs nothing, a killed or interrupted driver resumes, every run stored once."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import ray

from certlib.models import registry as models
from certlib.runs import ray_engine, store, sweep
from tests_paths import ROOT

ARRAYS = ("selection_ones", "estimation_ones", "clean_masks", "clean_attr", "selection_classes",
          "estimation_classes")


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    small = {"num_cpus": 1, "object_store_memory": 96 * 2**20}
    c = Cluster(initialize_head=True, head_node_args={**small, "include_dashboard": False})
    c.add_node(**small)
    c.wait_for_nodes()
    ray.init(address=c.address, log_to_driver=False)
    yield c
    ray.shutdown()
    c.shutdown()


@pytest.fixture(scope="module")
def digits():
    return models.load_model("digits_sigma0.25")


def _plan(model, limit: int = 6, methods=("grad", "lrp"), sigmas=(0.25, 0.5)):
    return sweep.plan(model, sweep.image_set("digits", limit), list(methods), list(sigmas), n=48, n0=8)


@pytest.fixture(scope="module")
def local_counts(digits, tmp_path_factory):
    """The local engine's counts of the plan every test below sweeps on the cluster."""
    db = store.Store(tmp_path_factory.mktemp("local") / "local.sqlite3")
    runs = _plan(digits)
    sweep.run_missing(db, digits, runs)
    return {r.config.key: db.get(r.config).counts for r in runs}


def _same_counts(db: store.Store, runs, expected: dict) -> None:
    """Every count, mask and vote bit for bit; the clean float map to 1e-6 of its scale: the actors run one torch
    thread and the local engine two, and channels_last convolutions on the CPU sum in a thread-dependent order
    (measured: 1.9e-9 of a 0.042 map), which moves no count."""
    assert len(db) == len(runs)
    for r in runs:
        got = db.get(r.config).counts
        for name in ARRAYS:
            a, b = getattr(got, name), getattr(expected[r.config.key], name)
            if name == "clean_attr":
                np.testing.assert_allclose(a, b, rtol=0, atol=1e-6 * float(np.abs(b).max()), err_msg=r.config.key)
            else:
                assert np.array_equal(a, b), (r.config.key, name)


def _recipe(model) -> ray_engine.ModelRecipe:
    return ray_engine.ModelRecipe("digits_sigma0.25", "cpu", "fp32", model.weights_sha256)


def test_a_two_node_sweep_equals_the_local_sweep_bit_for_bit(cluster, digits, local_counts, tmp_path):
    runs = _plan(digits)
    db = store.Store(tmp_path / "ray.sqlite3")
    placed = []
    stored = ray_engine.run_missing(db, _recipe(digits), runs, actors=2, on_started=placed.extend)
    assert stored == len(runs) == 24
    assert len({p["node"] for p in placed}) == 2 and all(p["threads"] == 1 for p in placed)
    _same_counts(db, runs, local_counts)


def test_a_worker_killed_mid_sweep_costs_only_its_runs_in_flight(cluster, digits, local_counts, tmp_path):
    runs = _plan(digits)
    db = store.Store(tmp_path / "ray.sqlite3")
    placed, killed, retried = [], [], []

    def kill_one_worker(done: int, total: int, run) -> None:
        if not killed:                                   # right after the first result: the victim has work queued
            os.kill(placed[0]["pid"], signal.SIGKILL)
            killed.append(placed[0]["pid"])

    stored = ray_engine.run_missing(db, _recipe(digits), runs, actors=2, progress=kill_one_worker,
                                    on_started=placed.extend, on_retry=lambda run, exc: retried.append(exc))
    assert killed and stored == len(runs)                # every run stored, each once (the key is unique)
    assert retried and all(isinstance(e, ray.exceptions.RayActorError) for e in retried)   # its runs ran again
    _same_counts(db, runs, local_counts)


def _cli(address: str, data: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), store.DATA_DIR_ENV: str(data)}
    args = ["run", "--engine", "ray", "--address", address, "--images", "digits", "--limit", "6", "--methods",
            "grad,lrp", "--sigmas", "0.25,0.5", "--n", "48", "--n0", "8", "--alpha", "0.1", "--actors", "2"]
    return subprocess.Popen([sys.executable, "-m", "certlib", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for_stored(path: Path, at_least: int, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        if path.exists() and len(store.Store(path, read_only=True)) >= at_least:
            return
        time.sleep(0.2)
    raise AssertionError(f"fewer than {at_least} runs stored after {timeout} s")


def test_a_killed_then_interrupted_driver_resumes_and_stores_every_run_once(cluster, digits, local_counts,
                                                                            tmp_path):
    data = tmp_path / "data"
    db_path = data / store.DB_NAME
    first = _cli(cluster.address, data)
    _wait_for_stored(db_path, 2, first)
    first.send_signal(signal.SIGKILL)                    # the driver dies without any cleanup
    first.wait(timeout=30)
    after_kill = len(store.Store(db_path))
    assert 2 <= after_kill < 24

    second = _cli(cluster.address, data)
    _wait_for_stored(db_path, after_kill + 1, second)
    second.send_signal(signal.SIGINT)                    # ctrl-C: a clean stop
    out, err = second.communicate(timeout=60)
    assert second.returncode == 130, err
    assert "interrupted" in out and "run the same command to resume" in out

    third = _cli(cluster.address, data)
    out, err = third.communicate(timeout=300)
    assert third.returncode == 0, err
    assert "already stored" in out and "| lrp | 0.5 | 50 |" in out
    _same_counts(store.Store(db_path), _plan(digits), local_counts)


class _Tiny(__import__("torch").nn.Module):
    def __init__(self):
        import torch
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(1, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(self.conv(x).relu().mean((2, 3)))


def test_a_torchscript_model_is_shipped_as_bytes_and_sandboxed_on_the_workers(cluster, tmp_path, monkeypatch):
    """The CLI's TorchScript model: the workers get the file's bytes through the object store and run it in their
    own sandbox; the stored counts equal the local engine's."""
    import torch

    from certlib.runs import cli

    path = tmp_path / "tiny.pt"
    torch.jit.save(torch.jit.script(_Tiny().eval()), str(path))
    args = ["run", "--model", str(path), "--input-shape", "1,32,32", "--images", "digits", "--limit", "2",
            "--methods", "grad", "--n", "24", "--n0", "8", "--alpha", "0.1"]
    stores = {}
    for engine in ("local", "ray"):
        monkeypatch.setenv(store.DATA_DIR_ENV, str(tmp_path / engine))
        extra = ["--engine", "ray", "--address", cluster.address, "--actors", "2"] if engine == "ray" else []
        assert cli.main([*args, *extra]) == 0
        stores[engine] = store.Store(tmp_path / engine / store.DB_NAME)
    local = {r.config["model_key"] + str(r.config["image_key"]): r.counts for r in stores["local"].all_runs()}
    remote = list(stores["ray"].all_runs())
    assert len(remote) == len(local) == 2 and all(r.config["model_key"].startswith("user:") for r in remote)
    for r in remote:
        mine = local[r.config["model_key"] + str(r.config["image_key"])]
        assert np.array_equal(r.counts.estimation_ones, mine.estimation_ones)
        assert np.array_equal(r.counts.selection_ones, mine.selection_ones)


def test_workers_that_cannot_start_or_do_not_fit_are_one_message(cluster, digits, tmp_path):
    from certlib.errors import CertlibError

    runs = _plan(digits, limit=1, methods=("grad",), sigmas=(0.25,))
    db = store.Store(tmp_path / "ray.sqlite3")
    wrong = ray_engine.ModelRecipe("digits_sigma0.25", "cpu", "fp32", "0" * 64)
    with pytest.raises(CertlibError, match="a Ray worker could not start on node .*weights of digits_sigma0.25 .* differ"):
        ray_engine.run_missing(db, wrong, runs, actors=1)
    with pytest.raises(CertlibError, match="--actors 3: the Ray cluster has 2 CPUs"):
        ray_engine.run_missing(db, _recipe(digits), runs, actors=3)
    assert len(db) == 0
