"""`python -m certlib run | table | export` end to end on tiny sweeps, in a temporary data directory."""
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from certlib import cli, sampling, store

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--images", "digits", "--limit", "1", "--methods", "grad,gradcam", "--sigmas", "0.25,0.5", "--n", "16",
        "--n0", "4", "--alpha", "0.1", "--batch-size", "8"]


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(store.DATA_DIR_ENV, str(tmp_path / "data"))
    return tmp_path / "data"


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "certlib", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_run_resume_and_export_end_to_end(data_dir, tmp_path, capsys):
    first = _cli("run", *TINY)                                 # the real entry point, in its own process
    assert first.returncode == 0, first.stderr
    assert "4 runs planned" in first.stdout and "0 already stored" in first.stdout
    assert "estimated time:" in first.stdout and "per copy: grad" in first.stdout
    assert "| grad | 0.25 | 5 |" in first.stdout and "| gradcam | 0.5 | 50 |" in first.stdout
    assert "sampling" in first.stderr                          # the tqdm bar
    assert len(store.Store(data_dir / store.DB_NAME)) == 4

    assert cli.main(["run", *TINY]) == 0                       # everything stored: nothing to estimate or sample
    again = capsys.readouterr().out
    assert "4 already stored" in again and "estimated" not in again

    out_csv, out_parquet = tmp_path / "m.csv", tmp_path / "m.parquet"
    assert cli.main(["export", "--csv", str(out_csv), "--parquet", str(out_parquet), "--alpha", "0.1"]) == 0
    with open(out_csv) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 * 3                                  # runs × default levels 5, 25, 50
    assert {r["method"] for r in rows} == {"grad", "gradcam"} and {r["sigma"] for r in rows} == {"0.25", "0.5"}
    for r in rows:
        shares = float(r["certified_top"]) + float(r["certified_not_top"]) + float(r["abstain"])
        assert shares == pytest.approx(1.0)
        assert r["certified_gridpg"] == ""                     # digits: no grid, no localization
        assert 0.0 <= float(r["deletion_auc"]) <= 1.0
    import pyarrow.parquet as pq
    table = pq.read_table(out_parquet).to_pylist()
    assert len(table) == 12 and table[0]["run_key"] == rows[0]["run_key"]
    assert table[0]["deletion_auc"] == pytest.approx(float(rows[0]["deletion_auc"]))


def test_an_interrupted_run_commits_what_is_done_and_resumes(data_dir, monkeypatch, capsys):
    real = sampling.sample_topk_counts
    calls = []

    def interrupted_on_the_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(sampling, "sample_topk_counts", interrupted_on_the_third)
    assert cli.main(["run", *TINY]) == cli.INTERRUPTED
    assert "interrupted: 2 of 4 runs are stored" in capsys.readouterr().out
    calls.clear()
    monkeypatch.setattr(sampling, "sample_topk_counts", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    assert cli.main(["run", *TINY]) == 0
    assert len(calls) == 2 and "2 already stored" in capsys.readouterr().out


def test_ctrl_c_on_a_real_process_exits_130_with_finished_runs_stored(data_dir):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = ["run", "--images", "digits", "--limit", "12", "--methods", "grad", "--n", "300", "--n0", "8",
            "--batch-size", "16"]
    proc = subprocess.Popen([sys.executable, "-m", "certlib", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    db = data_dir / store.DB_NAME
    deadline = time.time() + 240
    while time.time() < deadline and not (db.exists() and len(store.Store(db)) >= 1):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    stored = len(store.Store(db))
    assert proc.returncode == cli.INTERRUPTED, (out, err)
    assert 1 <= stored < 12 and f"interrupted: {stored} of 12 runs are stored" in out
    assert store.Store(db).integrity() == "ok"


def test_bad_arguments_name_the_bad_value(data_dir, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["run", "--methods", "grad,nope"])
    assert exc.value.code == 2 and "nope" in capsys.readouterr().err
    assert cli.main(["run", "--methods", "grad", "--sigmas", "-0.5", "--limit", "1", "--images", "digits"]) == 2
    err = capsys.readouterr().err
    assert "sigma" in err and "-0.5" in err
    assert cli.main(["export"]) == 2 and "--csv" in capsys.readouterr().err


def test_normalisation_is_part_of_every_stored_run(data_dir):
    """The same sweep under the paper's normalisation is another base function: new runs, stored beside the default."""
    assert cli.main(["run", *TINY, "--methods", "grad", "--sigmas", "0.25"]) == 0
    assert cli.main(["run", *TINY, "--methods", "grad", "--sigmas", "0.25", "--normalisation", "paper"]) == 0
    runs = list(store.Store(data_dir / store.DB_NAME).all_runs())
    assert sorted(r.counts.normalisation for r in runs) == ["paper", "rank"]
    assert sorted(store.config_from_dict(r.config).normalisation for r in runs) == ["paper", "rank"]
    assert all(r.counts.estimation_classes.sum() == 16 for r in runs)     # the prediction's votes are stored
