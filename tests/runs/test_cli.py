"""`python -m certlib run | table | export` end to end on tiny sweeps, in a temporary data directory."""
import csv
import os
import signal
import subprocess
import sys
import time

import pytest

from certlib.runs import cli, store
from certlib.smoothing import sampling
from tests_paths import ROOT

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
    with pytest.raises(SystemExit) as exc:
        cli.main(["run", "--methods", "grad", "--sigmas", "-0.5", "--limit", "1", "--images", "digits"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "σ must be positive" in err and "-0.5" in err
    assert cli.main(["export"]) == 2 and "--csv" in capsys.readouterr().err


def test_normalisation_is_part_of_every_stored_run(data_dir):
    """The same sweep under the paper's normalisation is another base function: new runs, stored beside the default."""
    assert cli.main(["run", *TINY, "--methods", "grad", "--sigmas", "0.25"]) == 0
    assert cli.main(["run", *TINY, "--methods", "grad", "--sigmas", "0.25", "--normalisation", "paper"]) == 0
    runs = list(store.Store(data_dir / store.DB_NAME).all_runs())
    assert sorted(r.counts.normalisation for r in runs) == ["paper", "rank"]
    assert sorted(store.config_from_dict(r.config).normalisation for r in runs) == ["paper", "rank"]
    assert all(r.counts.estimation_classes.sum() == 16 for r in runs)     # the prediction's votes are stored


# ------------------------------------------------------------------------------------------ bad input (issue 14)

def _one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.mark.parametrize("args, needles", [
    (["run", "--batch-size", "-4"], ("--batch-size", "-4")),
    (["run", "--tau", "1.0"], ("--tau", "[0.5, 1)")),
    (["run", "--alpha", "0"], ("--alpha", "(0, 1)")),
    (["run", "--n", "0"], ("--n", "got 0")),
    (["run", "--k", "1,5,101"], ("--k", "(0, 100]")),
    (["export", "--csv", "/missing/dir/x.csv"], ("/missing/dir", "does not exist")),
])
def test_bad_arguments_are_one_line_before_anything_runs(data_dir, args, needles):
    _one_line_error(_cli(*args), *needles)
    assert not (data_dir / store.DB_NAME).exists() or len(store.Store(data_dir / store.DB_NAME)) == 0


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_one_line(data_dir):
    _one_line_error(_cli("run", *TINY, "--device", "cuda"), "no CUDA GPU")


def test_duplicate_sigmas_and_methods_are_sampled_once_with_a_notice(data_dir, capsys):
    assert cli.main(["run", *TINY, "--methods", "grad,grad", "--sigmas", "0.25,0.25"]) == 0
    err = capsys.readouterr().err
    assert "duplicate methods ignored" in err and "duplicate σ values ignored" in err
    assert len(store.Store(data_dir / store.DB_NAME)) == 1


def test_a_data_dir_that_is_a_file_is_one_line(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    monkeypatch.setenv(store.DATA_DIR_ENV, str(blocker))
    _one_line_error(_cli("run", *TINY), "cannot be used")


def test_a_damaged_store_says_so_and_where(data_dir):
    data_dir.mkdir(parents=True)
    (data_dir / store.DB_NAME).write_bytes(b"this is not sqlite" * 100)
    result = _cli("table", *TINY[:-2])
    _one_line_error(result, "is damaged", "move it away", str(data_dir / store.DB_NAME))


def test_one_damaged_row_is_skipped_with_a_warning(data_dir, tmp_path):
    import sqlite3

    assert _cli("run", *TINY).returncode == 0
    path = data_dir / store.DB_NAME
    with sqlite3.connect(path) as con:
        key = con.execute("SELECT key FROM runs ORDER BY key LIMIT 1").fetchone()[0]
        con.execute("UPDATE runs SET counts = ? WHERE key = ?", (b"garbage", key))
    out = _cli("export", "--csv", str(tmp_path / "m.csv"))
    assert out.returncode == 0, out.stderr
    assert "skipped 1 damaged run" in out.stderr and key[:12] in out.stderr
    rows = list(csv.DictReader(open(tmp_path / "m.csv")))
    assert len({r["sigma"] + r["method"] for r in rows}) == 4 - 1 or len(rows) > 0
    table = _cli("table", *TINY[:-2])
    assert table.returncode == 0 and "skipped 1 damaged run" in table.stderr


def test_a_read_only_store_still_serves_reads(data_dir, tmp_path):
    """Under Landlock the whole file system is read-only for the child: `table` still reads the store."""
    from certlib.sandbox import landlock

    if landlock.abi_version() < 1:
        pytest.skip("needs Landlock to make the file system read-only as root")
    assert _cli("run", *TINY).returncode == 0
    scratch = tmp_path / "scratch"          # a temporary directory stays writable, as on a real read-only mount
    scratch.mkdir()
    code = ("import sys; from certlib.sandbox import landlock; from certlib.runs import cli; "
            f"landlock.restrict_self(readable=('/',), writable=({str(scratch)!r},)); "
            f"sys.exit(cli.main(['table', *{TINY[:-2]!r}]))")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(scratch), "MPLCONFIGDIR": str(scratch)}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert "| grad | 0.25 |" in out.stdout
    assert "read-only" not in out.stderr


def test_a_full_disk_gives_the_real_error(data_dir):
    """RLIMIT_FSIZE makes every write past a few KB fail like a full disk: the error says so, and the rollback that
    follows no longer hides it ("cannot rollback - no transaction is active")."""
    assert _cli("run", *TINY, "--sigmas", "0.25").returncode == 0
    size = (data_dir / store.DB_NAME).stat().st_size
    code = f"""
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, ({size + 4096}, {size + 4096}))
from certlib.runs import cli
sys.exit(cli.main(['run', *{TINY!r}, '--sigmas', '0.5']))
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 2, out
    last = out.stderr.strip().splitlines()[-1]
    assert "could not be written" in last and "cannot rollback" not in out.stderr and "Traceback" not in out.stderr


# ------------------------------------------------------------------------------------------ anytime runs (issue 18)

ANY = ["--images", "digits", "--limit", "1", "--methods", "grad", "--sigmas", "0.25", "--n0", "8", "--alpha", "0.1",
       "--batch-size", "16", "--anytime", "--max-n", "96"]


def test_anytime_runs_are_stored_apart_resume_and_decide_with_the_anytime_test(data_dir, capsys):
    from certlib.pixel import anytime, progressive

    assert cli.main(["run", *ANY]) == 0
    out = capsys.readouterr().out
    assert "estimated time: at most" in out and "anytime-valid test: the runs used" in out
    db = store.Store(data_dir / store.DB_NAME)
    (run,) = list(db.all_runs())
    config = store.config_from_dict(run.config)
    assert config.test == "anytime" and config.n == 96 and config.stop_rule == (0.75, 0.1, (5.0, 25.0, 50.0), "holm")
    # the stored counts are where the progressive sampler with that rule stops, exactly
    from certlib.attributions import methods as attributions
    from certlib.data import images
    from certlib.models import registry as models
    model = models.load_model("digits_sigma0.25")
    x = cli.sweep.prepared_input(model, images.digit_gallery()[0])
    fn, logits = attributions.for_target(model, "grad", config.target, 0)
    frames = list(progressive.certify_progressively(fn, x, 0.25, progressive.StopRule(*config.stop_rule), n_max=96,
                                                    n0=8, frame_size=16, logits=logits))
    assert frames[-1].counts.n == run.counts.n
    assert (frames[-1].counts.estimation_ones == run.counts.estimation_ones).all()
    assert cli.main(["run", *ANY]) == 0
    assert "1 already stored" in capsys.readouterr().out
    # the same sweep with a fixed n is another run; the table of the anytime sweep decides with the anytime test
    assert cli.main(["run", *ANY[:-3], "--n", "96"]) == 0
    capsys.readouterr()
    assert len(store.Store(data_dir / store.DB_NAME)) == 2
    rows = cli.export_rows(store.Store(data_dir / store.DB_NAME), cli.sweep.Decision(alpha=0.1))
    by_test = {r["test"]: r for r in rows if r["k_percent"] == 25.0}
    assert set(by_test) == {"anytime", "fixed"} and by_test["fixed"]["n"] == 96
    sub = run.counts.select_levels([5.0, 25.0, 50.0])
    expected = anytime.decide(sub.votes_for_mode, sub.modes, sub.n, 0.25, 0.75, 0.1)
    assert by_test["anytime"]["abstain"] == pytest.approx(float(expected.fractions["abstain"][1]))
    assert progressive.decide(sub, "fixed", 0.75, 0.1).fractions["abstain"][1] <= by_test["anytime"]["abstain"]


def test_fixed_n_keys_are_unchanged_by_the_test_fields():
    from dataclasses import replace

    base = store.RunConfig("m", "w", "img", "x", 1, "grad", (), 0.25, 100, 32, 0, (5.0,), "cpu",
                           versions=(("certlib", "1"),))
    assert '"test"' not in base.canonical() and '"stop_rule"' not in base.canonical()
    anyt = replace(base, test="anytime", stop_rule=(0.75, 1e-3, (5.0,), "holm"))
    assert anyt.key != base.key and '"test":"anytime"' in anyt.canonical()
    assert store.config_from_dict(__import__("json").loads(anyt.canonical())) == anyt


@pytest.mark.parametrize("args, needles", [
    (["run", "--max-n", "64"], ("--max-n", "--anytime")),
    (["run", "--anytime", "--stop-undecided", "1.5"], ("--stop-undecided", "[0, 1)")),
])
def test_anytime_options_without_anytime_or_out_of_range_are_one_line(data_dir, args, needles):
    result = _cli(*args)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
