"""Persistent results: the sampled counts of every metrics run, in one SQLite file under a user data directory.

A run is keyed by the sha256 of its complete configuration (`RunConfig`: model and weights hash, the prepared
image's hash, target, method and its parameters, noise kind, σ, n, n0, seed, the sampled K ladder, device, and the
versions of the libraries and certlib sources that produce the numbers). A lookup compares the whole stored
configuration, not only the hash, so a result is never served for a different config.

Only the expensive stage is stored (the `TopKCounts` and the prepared input): τ, α, the K subset and the
correction are decided afresh from them. Values that also need the model (faithfulness curves) are cached beside
the run, keyed by the run and the decision parameters.

Concurrency: WAL journal, a busy timeout, and one short transaction per write (`BEGIN IMMEDIATE`), so several
processes (the CLI and the app) can write at once; each run is committed as soon as it is sampled, so an
interrupted sweep loses at most the runs in flight and a rerun resumes from the store.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import sqlite3
import time
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np

from certlib.errors import CertlibError
from certlib.export import json_default

if TYPE_CHECKING:   # imported lazily: a process that only reads or writes blobs needs no torch
    from certlib.sampling import TopKCounts

DATA_DIR_ENV = "CERTEXPLORER_DATA_DIR"
DB_NAME = "metrics.sqlite3"
SCHEMA_VERSION = 1
# The certlib sources whose code decides the sampled counts; their hash is part of every key.
COUNTING_SOURCES = ("attributions.py", "_attr_utils.py", "noise.py", "sampling.py", "pixel_cert.py", "models.py",
                    "digits_cnn.py", "images.py")


def data_dir() -> Path:
    """$CERTEXPLORER_DATA_DIR, else $XDG_DATA_HOME/certexplorer, else ~/.local/share/certexplorer."""
    override = os.environ.get(DATA_DIR_ENV)
    if override:
        return Path(override).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "certexplorer"


def default_path() -> Path:
    return data_dir() / DB_NAME


@lru_cache(maxsize=1)
def library_versions() -> dict[str, str]:
    """Versions of everything that changes the numbers, plus a hash of certlib's counting sources."""
    import captum
    import torch
    import zennit  # noqa: F401  (imported for its presence; it has no __version__)
    from importlib.metadata import version

    import certlib

    src = Path(certlib.__file__).parent
    code = hashlib.sha256()
    for name in COUNTING_SOURCES:
        code.update(name.encode() + b"\0" + (src / name).read_bytes())
    return {"certlib": certlib.__version__, "certlib_code": code.hexdigest()[:16], "torch": torch.__version__,
            "captum": captum.__version__, "zennit": version("zennit"), "numpy": np.__version__,
            "python": platform.python_version()}


@dataclass(frozen=True)
class RunConfig:
    """Everything one sampled run depends on. `versions` defaults to this installation's."""

    model_key: str
    weights_sha256: str
    image_key: str             # provenance only; `input_sha256` is what identifies the pixels
    input_sha256: str          # sha256 of the prepared input [1,C,H,W] that was sampled around
    target: int
    method: str
    method_params: tuple[tuple[str, object], ...]
    sigma: float
    n: int
    n0: int
    seed: int
    k_percents: tuple[float, ...]
    device: str                # compute key: "cpu", "cuda" or "cuda+bf16" (CPU and CUDA noise draws differ; bf16
                               # changes the base function)
    noise: str = "gaussian"
    cell: int | None = None    # grid cell whose class is the target (localization), None otherwise
    normalisation: str = "rank"   # how h^K ranks a noisy map (pixel_cert.NORMALISATIONS): a different function
    versions: tuple[tuple[str, str], ...] = field(default_factory=lambda: tuple(sorted(library_versions().items())))

    def canonical(self) -> str:
        """The JSON the key hashes: sorted keys, floats as repr, tuples as lists."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"), default=str)

    @property
    def key(self) -> str:
        return hashlib.sha256(self.canonical().encode()).hexdigest()


# ------------------------------------------------------------------------------------------------ serialisation

_ARRAYS = ("clean_attr", "clean_masks", "selection_ones", "estimation_ones")
_OPTIONAL_ARRAYS = ("selection_classes", "estimation_classes")     # the prediction's votes, when sampled


def counts_to_bytes(counts: "TopKCounts", x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    meta = {"k_percents": counts.k_percents, "sigma": counts.sigma, "n0": counts.n0, "n": counts.n,
            "seed": counts.seed, "scale": counts.scale, "extra": counts.extra, "normalisation": counts.normalisation}
    optional = {name: getattr(counts, name) for name in _OPTIONAL_ARRAYS if getattr(counts, name) is not None}
    np.savez_compressed(buf, x=np.asarray(x, dtype=np.float32), meta=np.array(json.dumps(meta, default=str)),
                        **{name: getattr(counts, name) for name in _ARRAYS}, **optional)
    return buf.getvalue()


def counts_from_bytes(blob: bytes) -> tuple["TopKCounts", np.ndarray]:
    from certlib.sampling import TopKCounts

    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        counts = TopKCounts(k_percents=tuple(meta["k_percents"]), sigma=meta["sigma"], n0=meta["n0"], n=meta["n"],
                            seed=meta["seed"], scale=meta["scale"], extra=meta["extra"],
                            # runs stored before the normalisation was recorded used the clean-map scale
                            normalisation=meta.get("normalisation", "paper"),
                            **{name: z[name] for name in _ARRAYS},
                            **{name: z[name] for name in _OPTIONAL_ARRAYS if name in z.files})
        return counts, z["x"]


# ------------------------------------------------------------------------------------------------ the store

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    key TEXT PRIMARY KEY, config TEXT NOT NULL, model_key TEXT, method TEXT, image_key TEXT, target INTEGER,
    cell INTEGER, sigma REAL, n INTEGER, n0 INTEGER, seconds REAL, created REAL, counts BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS derived (
    run_key TEXT NOT NULL, params TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (run_key, params));
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT);
"""


@dataclass(frozen=True)
class StoredRun:
    config: dict
    counts: "TopKCounts"
    x: np.ndarray               # the prepared input [1,C,H,W] float32
    seconds: float


class Store:
    """One SQLite file; cheap to open (each call opens its own connection, so it is safe across threads)."""

    def __init__(self, path: str | os.PathLike | None = None, timeout: float = 60.0) -> None:
        self.path = Path(path) if path is not None else default_path()
        self.timeout = timeout
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as con:
            con.executescript(_SCHEMA)
            con.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            found = con.execute("SELECT value FROM meta WHERE name = 'schema'").fetchone()[0]
        if found != str(SCHEMA_VERSION):
            raise CertlibError(f"{self.path} has store schema {found}; this certlib reads schema {SCHEMA_VERSION}")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, taking the write lock up front so two writers
        # queue on the busy timeout instead of failing on a lock upgrade.
        with closing(sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)) as con:
            con.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            if con.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                con.execute("PRAGMA journal_mode = WAL")
            con.execute("PRAGMA synchronous = NORMAL")
            yield con

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise

    # -------------------------------------------------------------------------------------------- runs

    def put(self, config: RunConfig, counts: "TopKCounts", x: np.ndarray, seconds: float = float("nan")) -> None:
        """Store one sampled run (committed at once). A run already stored under this key is kept."""
        if tuple(counts.k_percents) != tuple(config.k_percents) or counts.n != config.n or counts.n0 != config.n0 \
                or counts.sigma != config.sigma or counts.seed != config.seed \
                or counts.normalisation != config.normalisation:
            raise CertlibError("the counts do not match their config (K levels, n, n0, σ, seed or normalisation "
                               "differ)")
        row = (config.key, config.canonical(), config.model_key, config.method, config.image_key, config.target,
               config.cell, config.sigma, config.n, config.n0, seconds, time.time(), counts_to_bytes(counts, x))
        with self._write() as con:
            con.execute("INSERT OR IGNORE INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", row)

    def get(self, config: RunConfig) -> StoredRun | None:
        """The stored run for exactly this config, or None."""
        with self._connect() as con:
            row = con.execute("SELECT config, counts, seconds FROM runs WHERE key = ?", (config.key,)).fetchone()
        if row is None or row[0] != config.canonical():   # equal hashes of unequal configs: never served
            return None
        counts, x = counts_from_bytes(row[1])
        return StoredRun(json.loads(row[0]), counts, x, row[2])

    def stored_keys(self, configs: list[RunConfig]) -> set[str]:
        """Which of these configs' keys are in the store (one query per 500)."""
        keys = [c.key for c in configs]
        found: set[str] = set()
        with self._connect() as con:
            for i in range(0, len(keys), 500):
                part = keys[i:i + 500]
                marks = ",".join("?" * len(part))
                found.update(r[0] for r in con.execute(f"SELECT key FROM runs WHERE key IN ({marks})", part))
        return found

    def missing(self, configs: list[RunConfig]) -> list[RunConfig]:
        stored = self.stored_keys(configs)
        return [c for c in configs if c.key not in stored]

    def seconds_per_sample(self, model_key: str, method: str) -> float | None:
        """Median wall time per noisy copy of the stored runs of this model and method (None if none was timed)."""
        with self._connect() as con:
            rows = con.execute("SELECT seconds / (n + n0) FROM runs WHERE model_key = ? AND method = ? "
                               "AND seconds IS NOT NULL", (model_key, method)).fetchall()
        values = [r[0] for r in rows if r[0] is not None and r[0] == r[0]]
        return float(np.median(values)) if values else None

    def __len__(self) -> int:
        with self._connect() as con:
            return con.execute("SELECT COUNT(*) FROM runs").fetchone()[0]

    def all_runs(self) -> Iterator[StoredRun]:
        """Every stored run, oldest first."""
        with self._connect() as con:
            rows = con.execute("SELECT config, counts, seconds FROM runs ORDER BY created, key").fetchall()
        for config, blob, seconds in rows:
            counts, x = counts_from_bytes(blob)
            yield StoredRun(json.loads(config), counts, x, seconds)

    # -------------------------------------------------------------------------------------------- derived values

    @staticmethod
    def _params(params: dict) -> str:
        return json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)

    def get_derived(self, config: RunConfig, params: dict) -> dict | None:
        with self._connect() as con:
            row = con.execute("SELECT value FROM derived WHERE run_key = ? AND params = ?",
                              (config.key, self._params(params))).fetchone()
        return None if row is None else json.loads(row[0])

    def put_derived(self, config: RunConfig, params: dict, value: dict) -> None:
        with self._write() as con:
            con.execute("INSERT OR REPLACE INTO derived VALUES (?,?,?)",
                        (config.key, self._params(params), json.dumps(value, default=json_default)))

    def integrity(self) -> str:
        with self._connect() as con:
            return con.execute("PRAGMA integrity_check").fetchone()[0]


def config_from_dict(d: dict) -> RunConfig:
    """Rebuild a RunConfig from its stored JSON (tuples come back as lists)."""
    d = dict(d)
    d["method_params"] = tuple(tuple(p) for p in d["method_params"])
    d["k_percents"] = tuple(d["k_percents"])
    d["versions"] = tuple(tuple(v) for v in d["versions"])
    d.setdefault("normalisation", "paper")      # stored before it was part of the key: the clean-map scale
    return RunConfig(**d)
