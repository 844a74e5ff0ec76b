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

import ast
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

from certlib.errors import CertlibError, StoreError
from certlib.runs.export import json_default

if TYPE_CHECKING:   # imported lazily: a process that only reads or writes blobs needs no torch
    from certlib.smoothing.sampling import TopKCounts

DATA_DIR_ENV = "CERTEXPLORER_DATA_DIR"
DB_NAME = "metrics.sqlite3"
SCHEMA_VERSION = 1
# The modules that sample a stored run (sweep.sample_run is the only writer; the others are the entry points of
# the sampling path). The code hash covers every certlib module they import, transitively, found by reading their
# imports (`counting_sources`): a hand list went stale (topk.py, engine.py, precision.py, ... were missing, and the
# store served old counts as a changed class function's certificate).
COUNTING_ENTRIES = ("runs.sweep", "smoothing.sampling", "pixel.progressive", "smoothing.uniform_sampling",
                    "attributions.methods", "models.registry", "data.images")


def data_dir() -> Path:
    """$CERTEXPLORER_DATA_DIR, else $XDG_DATA_HOME/certexplorer, else ~/.local/share/certexplorer."""
    override = os.environ.get(DATA_DIR_ENV)
    if override:
        return Path(override).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "certexplorer"


def default_path() -> Path:
    return data_dir() / DB_NAME


# ------------------------------------------------------------------------------------------------ the code hash

def _module_path(package_dir: Path, dotted: str) -> Path | None:
    """The file of module `dotted` ('certlib.x.y') inside the package at `package_dir`, or None if it is not one."""
    parts = dotted.split(".")
    if parts[0] != package_dir.name:
        return None
    base = package_dir.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py") if len(parts) > 1 else None, base / "__init__.py"):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


def _imported_names(tree: ast.AST, package: str) -> Iterator[str]:
    """Every dotted module name an import statement of `tree` may load ('from p import m' yields p and p.m: m may
    be a submodule). Imports inside functions and TYPE_CHECKING blocks count too: over-including is safe."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:          # relative: certlib's modules are all in one package
                base = ".".join(filter(None, (package, base)))
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def _source_strings(tree: ast.AST) -> Iterator[ast.AST]:
    """Code run from a string (the sandbox starts `python -c "from certlib.sandbox._worker import main; ..."`): the
    parsed string constants that contain an import."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and "import " in node.value:
            try:
                yield ast.parse(node.value)
            except (SyntaxError, ValueError):
                continue


def counting_sources(package_dir: Path) -> tuple[Path, ...]:
    """The package's __init__ and every module of it that COUNTING_ENTRIES import, transitively (sorted paths)."""
    package = package_dir.name
    todo = [package] + [f"{package}.{name}" for name in COUNTING_ENTRIES]
    found: set[Path] = set()
    while todo:
        path = _module_path(package_dir, todo.pop())
        if path is None or path in found:
            continue
        found.add(path)
        tree = ast.parse(path.read_bytes(), filename=str(path))
        for sub in (tree, *_source_strings(tree)):
            todo.extend(name for name in _imported_names(sub, package) if name.split(".")[0] == package)
    return tuple(sorted(found))


def code_hash(package_dir: Path) -> str:
    """16 hex digits of sha256 over the counting sources' relative paths and bytes."""
    code = hashlib.sha256()
    for path in counting_sources(package_dir):
        code.update(path.relative_to(package_dir).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return code.hexdigest()[:16]


@lru_cache(maxsize=1)   # once per process: the sources are read and parsed once (~20 files)
def library_versions() -> dict[str, str]:
    """Versions of everything that changes the numbers, plus a hash of certlib's counting sources."""
    import captum
    import torch
    import zennit  # noqa: F401  (imported for its presence; it has no __version__)
    from importlib.metadata import version

    import certlib

    return {"certlib": certlib.__version__, "certlib_code": code_hash(Path(certlib.__file__).parent),
            "torch": torch.__version__,
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
    # "fixed": n estimation copies, decided by the exact binomial test. "anytime": n is the budget n_max; sampling
    # stopped once the stop rule (τ, α, decided levels, correction) had every pixel decided, so the stored counts may
    # hold fewer, and they are decided by the anytime-valid test (certlib.pixel.progressive).
    test: str = "fixed"
    stop_rule: tuple | None = None
    versions: tuple[tuple[str, str], ...] = field(default_factory=lambda: tuple(sorted(library_versions().items())))

    def canonical(self) -> str:
        """The JSON the key hashes: sorted keys, floats as repr, tuples as lists. A fixed-n run leaves out the test
        fields, so runs stored before they existed keep their keys."""
        d = asdict(self)
        if self.test == "fixed" and self.stop_rule is None:
            del d["test"], d["stop_rule"]
        return json.dumps(d, sort_keys=True, separators=(",", ":"), default=str)

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
    from certlib.smoothing.sampling import TopKCounts

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
CREATE TABLE IF NOT EXISTS image_sets (
    set_name TEXT NOT NULL, run_key TEXT NOT NULL, image_label TEXT, PRIMARY KEY (set_name, run_key));
"""


@dataclass(frozen=True)
class StoredRun:
    config: dict
    counts: "TopKCounts"
    x: np.ndarray               # the prepared input [1,C,H,W] float32
    seconds: float


class Store:
    """One SQLite file; cheap to open (each call opens its own connection, so it is safe across threads)."""

    def __init__(self, path: str | os.PathLike | None = None, timeout: float = 60.0,
                 read_only: bool | None = None) -> None:
        """`read_only=None`: writable when the file system allows it, else opened read-only (reads work, a write
        raises StoreError). Damaged rows are skipped by `all_runs` and `get` and listed in `self.skipped`."""
        self.path = Path(path) if path is not None else default_path()
        self.timeout = timeout
        self.read_only = bool(read_only)
        self.skipped: dict[str, str] = {}          # key -> why a stored row could not be read
        if self.path.is_dir():
            raise StoreError(f"the results store {self.path} is a directory, not a file")
        if not self.read_only:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._init_schema()
                return
            except StoreError as exc:
                if read_only is False or not (exc.__cause__ and _read_only_error(exc.__cause__)):
                    raise
            except OSError as exc:
                if read_only is False or not self.path.is_file():
                    raise StoreError(f"the results directory {self.path.parent} cannot be used: "
                                     f"{exc.strerror or exc}") from None
            self.read_only = True
        if not self.path.is_file():
            raise StoreError(f"there is no results store at {self.path} to read")
        self._check_schema()

    def _init_schema(self) -> None:
        with self._connect() as con:
            con.executescript(_SCHEMA)
            con.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        self._check_schema()

    def _check_schema(self) -> None:
        with self._connect() as con:
            row = con.execute("SELECT value FROM meta WHERE name = 'schema'").fetchone()
        found = None if row is None else row[0]
        if found != str(SCHEMA_VERSION):
            raise StoreError(f"{self.path} has store schema {found}; this certlib reads schema {SCHEMA_VERSION}")

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """sqlite's errors as one sentence naming the store (never a raw DatabaseError)."""
        try:
            yield
        except sqlite3.Error as exc:
            raise StoreError(_explain(exc, self.path)) from exc

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, taking the write lock up front so two writers
        # queue on the busy timeout instead of failing on a lock upgrade.
        with self._errors():
            if self.read_only:
                connection = self._read_only_connection()
            else:
                connection = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
            with closing(connection) as con:
                con.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
                if not self.read_only:
                    if con.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                        con.execute("PRAGMA journal_mode = WAL")
                    con.execute("PRAGMA synchronous = NORMAL")
                yield con

    def _read_only_connection(self) -> sqlite3.Connection:
        # mode=ro still needs to write the WAL's shared-memory file beside the store; where even that is refused,
        # immutable=1 reads the file as it is (nobody can be writing it through this file system anyway).
        for mode in ("mode=ro", "immutable=1"):
            con = sqlite3.connect(f"file:{self.path}?{mode}", uri=True, timeout=self.timeout, isolation_level=None)
            try:
                con.execute("SELECT 1 FROM meta LIMIT 1").fetchall()
                return con
            except sqlite3.OperationalError as exc:
                con.close()
                if mode == "immutable=1" or not _read_only_error(exc):
                    raise
        raise AssertionError("unreachable")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        if self.read_only:
            raise StoreError(f"the results store at {self.path} is read-only here: results can be read but not "
                             "saved")
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
                con.execute("COMMIT")
            except BaseException:
                try:   # sqlite may already have rolled back (a full disk): keep the real error, not this one's
                    con.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                raise

    # -------------------------------------------------------------------------------------------- runs

    def put(self, config: RunConfig, counts: "TopKCounts", x: np.ndarray, seconds: float = float("nan")) -> None:
        """Store one sampled run (committed at once). A run already stored under this key is kept."""
        n_ok = counts.n == config.n if config.test == "fixed" else counts.n <= config.n
        if tuple(counts.k_percents) != tuple(config.k_percents) or not n_ok or counts.n0 != config.n0 \
                or counts.sigma != config.sigma or counts.seed != config.seed \
                or counts.normalisation != config.normalisation:
            raise CertlibError("the counts do not match their config (K levels, n, n0, σ, seed or normalisation "
                               "differ)")
        row = (config.key, config.canonical(), config.model_key, config.method, config.image_key, config.target,
               config.cell, config.sigma, config.n, config.n0, seconds, time.time(), counts_to_bytes(counts, x))
        verb = "REPLACE" if config.key in self.skipped else "IGNORE"     # a damaged row is replaced
        with self._write() as con:
            con.execute(f"INSERT OR {verb} INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", row)
        self.skipped.pop(config.key, None)

    def get(self, config: RunConfig) -> StoredRun | None:
        """The stored run for exactly this config, or None."""
        with self._connect() as con:
            row = con.execute("SELECT config, counts, seconds FROM runs WHERE key = ?", (config.key,)).fetchone()
        if row is None or row[0] != config.canonical():   # equal hashes of unequal configs: never served
            return None
        return self._decoded(config.key, *row)

    def _decoded(self, key: str, config: str, blob: bytes, seconds: float) -> StoredRun | None:
        """The row as a StoredRun, or None (recorded in self.skipped) when it cannot be read."""
        try:
            counts, x = counts_from_bytes(blob)
            return StoredRun(json.loads(config), counts, x, seconds)
        except (MemoryError, FileNotFoundError, PermissionError):
            raise                       # the machine's trouble, not the row's
        except Exception as exc:        # a damaged row: whatever the decoder raises, the rest stays usable
            self.skipped[key] = f"{type(exc).__name__}: {str(exc)[:200]}"
            return None

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
            rows = con.execute("SELECT key, config, counts, seconds FROM runs ORDER BY created, key").fetchall()
        for key, config, blob, seconds in rows:
            run = self._decoded(key, config, blob, seconds)
            if run is not None:
                yield run

    # -------------------------------------------------------------------------------------------- image sets

    def tag_set(self, set_name: str, runs: list[tuple[RunConfig, str]]) -> None:
        """Record that these runs (config, image label) belong to a user's image set (a folder's path), so the
        metrics page can list the set. Tags of runs not sampled yet are harmless: reads join with the runs."""
        if self.read_only or not runs:
            return
        with self._write() as con:
            con.executemany("INSERT OR IGNORE INTO image_sets VALUES (?, ?, ?)",
                            [(set_name, c.key, label) for c, label in runs])

    def image_sets(self) -> dict[str, int]:
        """{set name: how many of its runs are stored}, for sets tagged by `tag_set`."""
        try:
            with self._connect() as con:
                rows = con.execute("SELECT s.set_name, COUNT(*) FROM image_sets s JOIN runs r ON r.key = s.run_key "
                                   "GROUP BY s.set_name ORDER BY s.set_name").fetchall()
        except StoreError:              # a read-only store written before image sets existed
            return {}
        return {name: count for name, count in rows}

    def runs_in_set(self, set_name: str) -> Iterator[tuple[StoredRun, str]]:
        """(stored run, image label) of every stored run of the set, oldest first."""
        with self._connect() as con:
            rows = con.execute("SELECT r.key, r.config, r.counts, r.seconds, s.image_label FROM image_sets s "
                               "JOIN runs r ON r.key = s.run_key WHERE s.set_name = ? ORDER BY r.created, r.key",
                               (set_name,)).fetchall()
        for key, config, blob, seconds, label in rows:
            run = self._decoded(key, config, blob, seconds)
            if run is not None:
                yield run, label

    # -------------------------------------------------------------------------------------------- derived values

    @staticmethod
    def _params(params: dict) -> str:
        return json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)

    def get_derived(self, config: RunConfig, params: dict) -> dict | None:
        with self._connect() as con:
            row = con.execute("SELECT value FROM derived WHERE run_key = ? AND params = ?",
                              (config.key, self._params(params))).fetchone()
        try:
            return None if row is None else json.loads(row[0])
        except ValueError:
            return None                   # a damaged cache entry: recomputed and replaced

    def put_derived(self, config: RunConfig, params: dict, value: dict) -> None:
        """Cache a value derived from a run; a read-only store simply does not cache."""
        if self.read_only:
            return
        with self._write() as con:
            con.execute("INSERT OR REPLACE INTO derived VALUES (?,?,?)",
                        (config.key, self._params(params), json.dumps(value, default=json_default)))

    def integrity(self) -> str:
        with self._connect() as con:
            return con.execute("PRAGMA integrity_check").fetchone()[0]


def _read_only_error(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "readonly" in text or "read-only" in text or "unable to open" in text


def _explain(exc: sqlite3.Error, path: Path) -> str:
    text = str(exc)
    low = text.lower()
    if "not a database" in low or "malformed" in low or "corrupt" in low:
        return f"the results store at {path} is damaged: {text}; move it away to start a new one"
    if "readonly" in low:
        return f"the results store at {path} is read-only here: {text}"
    if "disk is full" in low or "disk i/o" in low:
        return f"the results store at {path} could not be written: {text} (is the disk full?)"
    if "unable to open" in low:
        return f"the results store at {path} cannot be opened: {text}"
    if "locked" in low or "busy" in low:
        return f"the results store at {path} is busy (another process holds it): {text}"
    return f"the results store at {path} failed: {text}"


def config_from_dict(d: dict) -> RunConfig:
    """Rebuild a RunConfig from its stored JSON (tuples come back as lists)."""
    d = dict(d)
    d["method_params"] = tuple(tuple(p) for p in d["method_params"])
    d["k_percents"] = tuple(d["k_percents"])
    d["versions"] = tuple(tuple(v) for v in d["versions"])
    d.setdefault("normalisation", "paper")      # stored before it was part of the key: the clean-map scale
    if d.get("stop_rule") is not None:
        tau, alpha, levels, correction, *tolerance = d["stop_rule"]
        d["stop_rule"] = (tau, alpha, tuple(levels), correction, *tolerance)
    return RunConfig(**d)
