"""The run store: exact-config keying, atomic commits, resume, and two writer processes on one file."""
import dataclasses
import inspect
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from certlib.runs import store
from certlib.smoothing.sampling import TopKCounts
from certlib.runs.store import RunConfig, Store
from tests_paths import ROOT, TESTS



@pytest.fixture(autouse=True)
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(store.DATA_DIR_ENV, str(tmp_path / "data"))
    return tmp_path / "data"


VERSIONS = (("test", "1"),)   # explicit, so helper processes need not import torch to build a config


def _config(**changes) -> RunConfig:
    base = dict(model_key="m", weights_sha256="w" * 64, image_key="digit:3", input_sha256="i" * 64, target=3,
                method="grad", method_params=(("p", 1),), sigma=0.25, n=10, n0=4, seed=0, k_percents=(5.0, 50.0),
                device="cpu", versions=VERSIONS)
    base.update(changes)
    return RunConfig(**base)


def _arrays(config: RunConfig, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    k = len(config.k_percents)
    return dict(k_percents=config.k_percents, sigma=config.sigma, n0=config.n0, n=config.n, seed=config.seed,
                scale=0.5, extra={}, clean_attr=rng.random((6, 6), dtype=np.float32),
                clean_masks=rng.random((k, 6, 6)) < 0.3,
                selection_ones=rng.integers(0, config.n0 + 1, (k, 6, 6), dtype=np.int32),
                estimation_ones=rng.integers(0, config.n + 1, (k, 6, 6), dtype=np.int32),
                normalisation=config.normalisation, selection_classes=None, estimation_classes=None)


def _counts(config: RunConfig, seed: int = 0) -> TopKCounts:
    return TopKCounts(**_arrays(config, seed))


def test_data_dir_follows_the_environment(data_dir):
    assert store.default_path() == data_dir / store.DB_NAME
    s = Store()
    assert s.path == data_dir / store.DB_NAME and s.path.is_file()


def test_round_trip_keeps_every_array_exactly():
    config = _config()
    counts = _counts(config)
    x = np.random.default_rng(1).random((1, 1, 6, 6), dtype=np.float32)
    s = Store()
    s.put(config, counts, x, seconds=1.5)
    got = s.get(config)
    for name in ("clean_attr", "clean_masks", "selection_ones", "estimation_ones"):
        a, b = getattr(got.counts, name), getattr(counts, name)
        assert a.dtype == b.dtype and np.array_equal(a, b), name
    assert np.array_equal(got.x, x) and got.seconds == 1.5
    assert (got.counts.k_percents, got.counts.n, got.counts.n0, got.counts.scale) == ((5.0, 50.0), 10, 4, 0.5)
    assert got.counts.normalisation == "rank" and got.counts.selection_classes is None
    with_votes = dataclasses.replace(counts, selection_classes=np.array([3, 1, 0]),
                                     estimation_classes=np.array([7, 2, 1]))
    other = dataclasses.replace(config, seed=config.seed)
    s2 = Store(s.path.with_name("votes.sqlite3"))
    s2.put(other, with_votes, x)
    back = s2.get(other).counts
    assert np.array_equal(back.selection_classes, [3, 1, 0]) and np.array_equal(back.estimation_classes, [7, 2, 1])
    assert store.config_from_dict(got.config) == config


CHANGED = {"model_key": "m2", "weights_sha256": "v" * 64, "image_key": "digit:4", "input_sha256": "j" * 64,
           "target": 4, "method": "lrp", "method_params": (("p", 2),), "sigma": 0.5, "n": 11, "n0": 5, "seed": 1,
           "k_percents": (5.0, 25.0), "device": "cuda", "noise": "uniform", "cell": 2, "normalisation": "paper",
           "versions": (("test", "2"),), "test": "anytime", "stop_rule": (0.75, 1e-3, (5.0,), "holm")}


def test_every_field_is_part_of_the_key():
    assert set(CHANGED) == {f.name for f in dataclasses.fields(RunConfig)}   # no field left untested
    s = Store()
    base = _config()
    s.put(base, _counts(base), np.zeros((1, 1, 6, 6), np.float32))
    assert s.get(base) is not None
    for name, value in CHANGED.items():
        other = dataclasses.replace(base, **{name: value})
        assert other.key != base.key, name
        assert s.get(other) is None, name
        assert s.missing([base, other]) == [other], name


def test_a_hash_collision_is_never_served(monkeypatch):
    s = Store()
    a, b = _config(), _config(target=7)
    s.put(a, _counts(a), np.zeros((1, 1, 6, 6), np.float32))
    monkeypatch.setattr(RunConfig, "key", property(lambda self: "same"))
    s2 = Store(s.path.with_name("collide.sqlite3"))
    s2.put(a, _counts(a), np.zeros((1, 1, 6, 6), np.float32))
    assert s2.get(a) is not None and s2.get(b) is None   # same key, different stored config: a miss


def test_counts_that_do_not_match_their_config_are_refused():
    from certlib.errors import CertlibError

    with pytest.raises(CertlibError, match="do not match"):
        Store().put(_config(), _counts(_config(n=12)), np.zeros((1, 1, 6, 6), np.float32))
    paper = dataclasses.replace(_counts(_config()), normalisation="paper")     # another base function h^K
    with pytest.raises(CertlibError, match="normalisation"):
        Store().put(_config(), paper, np.zeros((1, 1, 6, 6), np.float32))


def test_derived_values_are_keyed_by_run_and_parameters():
    s = Store()
    a = _config()
    s.put_derived(a, {"tau": 0.75}, {"auc": 0.5})
    assert s.get_derived(a, {"tau": 0.75}) == {"auc": 0.5}
    assert s.get_derived(a, {"tau": 0.8}) is None and s.get_derived(_config(seed=3), {"tau": 0.75}) is None


def _script(body: str) -> list[str]:
    prelude = textwrap.dedent(f"""
        import sys, numpy as np
        sys.path.insert(0, {str(ROOT)!r}); sys.path.insert(0, {str(TESTS)!r})
        from types import SimpleNamespace
        from certlib.runs.store import RunConfig, Store
    """)
    # The helpers' own source, so that the processes build the same configs without importing torch.
    helpers = "\n".join(inspect.getsource(f) for f in (_config, _arrays))
    counts = "_counts = lambda c, seed=0: SimpleNamespace(**_arrays(c, seed))  # the store reads attributes only\n"
    return [sys.executable, "-c", prelude + f"VERSIONS = {VERSIONS!r}\n" + helpers + counts + textwrap.dedent(body)]


def test_a_writer_killed_mid_transaction_leaves_no_partial_run():
    s = Store()
    s.put(_config(), _counts(_config()), np.zeros((1, 1, 6, 6), np.float32))
    body = """
        import os
        s = Store()
        c = _config(seed=9)
        with s._write() as con:   # the row is inserted but the process dies before COMMIT
            con.execute("INSERT INTO runs (key, config, counts) VALUES (?, ?, ?)", (c.key, c.canonical(), b"junk"))
            os._exit(3)
    """
    assert subprocess.run(_script(body), env=os.environ.copy(), timeout=120).returncode == 3
    assert len(s) == 1 and s.get(_config(seed=9)) is None and s.integrity() == "ok"
    s.put(_config(seed=9), _counts(_config(seed=9)), np.zeros((1, 1, 6, 6), np.float32))   # writable again
    assert len(s) == 2


def test_two_writer_processes_do_not_corrupt_the_store():
    go = Store().path.with_name("go")
    body = f"""
        import os, time
        wid = int(sys.argv[1])
        s = Store()
        while not os.path.exists({str(go)!r}):   # start writing together
            time.sleep(0.01)
        for i in range(60):
            seed = wid * 100 + i if i < 50 else i    # the last 10 configs are written by both processes
            c = _config(seed=seed)
            s.put(c, _counts(c, seed), np.full((1, 1, 6, 6), seed, np.float32))
            assert c.key in s.stored_keys([c])
    """
    procs = [subprocess.Popen(_script(body) + [str(w)], env=os.environ.copy()) for w in (1, 2)]
    go.touch()
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    s = Store()
    assert s.integrity() == "ok" and len(s) == 110
    for seed in [100 + i for i in range(50)] + [200 + i for i in range(50)] + list(range(50, 60)):
        got = s.get(_config(seed=seed))
        assert got is not None and np.array_equal(got.counts.estimation_ones, _counts(_config(seed=seed), seed)
                                                  .estimation_ones) and got.x[0, 0, 0, 0] == seed


# ------------------------------------------------------------------------------------------------ the code hash

CERTLIB = ROOT / "certlib"


@pytest.fixture(scope="module")
def package_copy(tmp_path_factory):
    """A copy of the certlib sources, edited by the tests below (the installed package is never touched)."""
    import shutil

    dest = tmp_path_factory.mktemp("pkg") / "certlib"
    shutil.copytree(CERTLIB, dest, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def test_the_code_hash_covers_the_modules_the_counts_depend_on():
    names = {p.relative_to(CERTLIB).as_posix() for p in store.counting_sources(CERTLIB)}
    # the modules an audit found missing from the old hand list, the sandbox worker started from a string, and
    # the modules the stored runs are sampled by
    must = {"smoothing/topk.py", "smoothing/engine.py", "models/precision.py", "models/lrp_canonizers.py",
            "models/efficientnet_lite.py", "smoothing/noise.py", "smoothing/uniform_sampling.py",
            "pixel/progressive.py", "pixel/anytime.py", "sandbox/_worker.py", "smoothing/sampling.py",
            "runs/sweep.py", "attributions/methods.py", "attributions/_utils.py", "models/registry.py",
            "models/digits_cnn.py", "data/images.py", "pixel/cert.py"}
    assert must <= names
    assert not names & {"viz.py", "pixel/viz.py", "runs/cli.py", "pixel/guarantee.py", "uniform/viz.py"}
    assert store.library_versions()["certlib_code"] == store.code_hash(CERTLIB)


def test_editing_any_counting_module_changes_the_key(package_copy):
    before = store.code_hash(package_copy)
    sources = store.counting_sources(package_copy)
    assert len(sources) >= 20
    for path in sources:
        text = path.read_bytes()
        path.write_bytes(text + b"\nEDITED = 1\n")
        try:
            assert store.code_hash(package_copy) != before, path.name
        finally:
            path.write_bytes(text)
    assert store.code_hash(package_copy) == before


def test_editing_a_module_outside_the_sampling_path_keeps_the_key(package_copy):
    before = store.code_hash(package_copy)
    for name in ("viz.py", "runs/cli.py", "pixel/viz.py"):
        path = package_copy / name
        text = path.read_bytes()
        path.write_bytes(text + b"\nEDITED = 1\n")
        try:
            assert store.code_hash(package_copy) == before, name
        finally:
            path.write_bytes(text)


def test_a_new_import_on_the_sampling_path_joins_the_hash(package_copy):
    """The set follows the code: a counting module that starts importing viz.py makes viz.py count."""
    topk = package_copy / "smoothing" / "topk.py"
    text = topk.read_bytes()
    topk.write_bytes(text + b"\ndef _late():\n    from certlib import viz  # noqa: F401\n")
    try:
        assert "viz.py" in {p.name for p in store.counting_sources(package_copy)}
    finally:
        topk.write_bytes(text)
