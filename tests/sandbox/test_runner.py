"""Uploaded TorchScript is code: the static operator check, and the sandboxed worker that runs what passes it.

Each hostile model is scripted here from tests/hostile_models.py. Where a test skips the static check it does so to
show that the sandbox alone still holds; a control run outside the sandbox shows that the model really does what it
is accused of, so the test could fail."""
import io
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import hostile_models as H
from certlib.attributions import methods as attributions
from certlib.sandbox import landlock
from certlib.models import registry as models
from certlib.errors import ModelError
from certlib.sandbox.runner import ModelTimeout, SandboxWorker
from certlib.sandbox.torchscript_check import check_archive
from tests_paths import ROOT

pytestmark = pytest.mark.skipif(landlock.abi_version() < 1, reason="needs a kernel with Landlock")


def _archive(module: torch.nn.Module) -> bytes:
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(module), buf)
    return buf.getvalue()


@pytest.fixture
def victim(tmp_path):
    path = tmp_path / "victim.bin"
    path.write_bytes(b"SAFE-and-sound")
    return path


@pytest.fixture
def secret(tmp_path):
    path = tmp_path / "secret.txt"
    path.write_bytes(b"TOPSECRET-4f2a9\n")
    return path


# ------------------------------------------------------------------------------------------------ static check

@pytest.mark.parametrize("make, op", [(H.ReadsFile, "from_file"), (H.WritesFile, "from_file"),
                                      (H.WritesOnLoad, "from_file"), (H.Saves, "save")])
def test_file_operators_are_refused_before_loading(make, op, victim):
    with pytest.raises(ModelError, match=f"not allowed.*{op}"):
        models.load_torchscript(_archive(make(str(victim))), 1, 8, 8)
    assert victim.read_bytes() == b"SAFE-and-sound"


def test_legitimate_architectures_pass_the_check():
    import torchvision

    check_archive(_archive(models.load_model("digits_sigma0.25").module))
    check_archive(_archive(torchvision.models.resnet18().eval()))
    check_archive(_archive(H.LoopsOnNoise()))        # a loop is not an operator: the time limit stops it


def test_custom_operator_namespaces_are_refused():
    source = ("class M(Module):\n  def forward(self, x: Tensor) -> Tensor:\n"
              "    return ops.myext.evil(x)\n")
    data = io.BytesIO()
    import zipfile
    with zipfile.ZipFile(data, "w") as z:
        z.writestr("archive/code/__torch__/m.py", source)
        z.writestr("archive/constants.pkl", b"")
    with pytest.raises(ModelError, match="myext::evil"):
        check_archive(data.getvalue())


# ------------------------------------------------------------------------------------------------ the sandbox

def test_an_honest_model_gives_the_same_numbers_in_the_sandbox():
    base = models.load_model("digits_sigma0.25")
    model = models.load_torchscript(_archive(base.module), 1, 32, 32, "digits")
    assert model.module.worker.landlock_abi >= 1
    x = torch.rand(5, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    assert torch.equal(model.module(x), base.module(x))
    for method in ("grad", "input_x_gradient", "integrated_gradients"):
        got = attributions.make_attribution(method, model).attribute(x, 3)
        assert torch.equal(got, attributions.make_attribution(method, base).attribute(x, 3)), method
    printing = models.load_torchscript(_archive(H.Honest()), 1, 8, 8)
    assert printing.predict_proba(torch.rand(2, 1, 8, 8)).shape == (2, 3)


def test_the_sandbox_alone_keeps_files_unread_and_unwritten(secret, victim, tmp_path):
    # control: outside the sandbox these models really read the secret and write the victim
    scratch = tmp_path / "scratch.bin"
    scratch.write_bytes(b"SAFE-and-sound")
    torch.jit.load(io.BytesIO(_archive(H.WritesFile(str(scratch)))))(torch.rand(1, 1, 8, 8))
    assert scratch.read_bytes().startswith(b"PPPP")
    leaked = torch.jit.load(io.BytesIO(_archive(H.ReadsFile(str(secret)))))(torch.rand(1, 1, 8, 8))
    assert leaked[0].tolist() == [float(b) for b in b"TO"]
    # in the sandbox (static check skipped on purpose): refused, nothing read, nothing written
    messages = []
    for make, path in ((H.ReadsFile, secret), (H.WritesFile, victim)):
        with pytest.raises(ModelError) as info:
            SandboxWorker(_archive(make(str(path))), 1, 8, 8, static_check=False)
        messages.append(str(info.value))
    assert all("Permission denied" in m for m in messages), messages
    assert victim.read_bytes() == b"SAFE-and-sound"
    assert not any("TOPSECRET" in m or "84, 79" in m for m in messages)


def test_setstate_cannot_write_during_load(victim, tmp_path):
    scratch = tmp_path / "scratch.bin"
    scratch.write_bytes(b"SAFE-and-sound")
    torch.jit.load(io.BytesIO(_archive(H.WritesOnLoad(str(scratch)))))          # control: load alone writes
    assert scratch.read_bytes().startswith(b"PPPP")
    with pytest.raises(ModelError):
        SandboxWorker(_archive(H.WritesOnLoad(str(victim))), 1, 8, 8, static_check=False)
    assert victim.read_bytes() == b"SAFE-and-sound"


def _autogroup(pid) -> list[str]:
    try:
        return open(f"/proc/{pid}/autogroup").read().split()
    except OSError:
        return []


def test_the_worker_yields_the_cores_to_the_app_process_and_its_session_group():
    """nice 10 for the worker and, where the kernel groups sessions (autogroup), for its own session's group: the
    worker starts a session of its own, and between groups only the group's nice counts."""
    from certlib.sandbox._worker import WORKER_NICENESS

    worker = SandboxWorker(_archive(H.Honest()), 1, 8, 8)
    try:
        pid = worker._proc.pid
        stat = open(f"/proc/{pid}/stat").read()
        assert int(stat[stat.rindex(")") + 2:].split()[16]) == os.getpriority(os.PRIO_PROCESS, 0) + WORKER_NICENESS
        assert os.getsid(pid) == pid != os.getsid(0)                      # a session of its own
        # The file exists on every kernel built with autogroups, but is empty for a task whose cpu cgroup is not the
        # root one (containers, CI runners): there the kernel does not group by session and os.nice is the whole story.
        ours, theirs = (_autogroup("self"), _autogroup(pid))
        if ours and theirs:
            assert theirs[0] != ours[0] and theirs[-1] == str(WORKER_NICENESS)
    finally:
        worker.close()


def test_a_model_that_loops_on_noisy_inputs_is_stopped_within_the_limit():
    worker = SandboxWorker(_archive(H.LoopsOnNoise()), 1, 8, 8, timeout=3.0)   # loads: probes are in [0,1]
    model = models.LoadedModel(spec=None, module=__import__("certlib.sandbox.runner").sandbox.runner.SandboxedModule(worker),
                               weights_sha256="x")
    noisy = torch.rand(4, 1, 8, 8) - 0.5
    start = time.monotonic()
    with pytest.raises(ModelTimeout, match="did not answer within 3 s"):
        model.module(noisy)
    assert time.monotonic() - start < 3.0 + 2.0
    pid = worker._proc
    assert pid is None                                         # the looping worker is gone ...
    out = model.module(torch.rand(2, 1, 8, 8))                 # ... and a fresh one answers the next call
    assert out.shape == (2, 2) and worker.restarts == 1


def test_a_huge_allocation_hits_the_memory_limit_not_the_server():
    with pytest.raises(ModelError, match="memory|allocate"):
        SandboxWorker(_archive(H.HugeAllocation()), 1, 8, 8, memory_mb=1024)


def test_landlock_denies_files_and_tcp_in_a_restricted_process(secret):
    """The mechanism itself, in a child process: after restrict_self no file opens and no TCP connect succeeds."""
    code = f"""
import socket, sys
sys.path.insert(0, {str(ROOT)!r})
from certlib.sandbox import landlock
landlock.restrict_self()
for attempt in (lambda: open({str(secret)!r}).read(), lambda: open('/tmp/new-file-by-sandbox', 'w')):
    try:
        attempt(); print('FILE-OPEN')
    except PermissionError:
        print('file denied')
s = socket.socket()
try:
    s.connect(('127.0.0.1', 9)); print('CONNECTED')
except PermissionError:
    print('tcp denied')
except OSError as e:
    print('tcp error', e.errno)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.count("file denied") == 2, out
    if landlock.abi_version() >= 4:
        assert "tcp denied" in out.stdout, out
    assert "TOPSECRET" not in out.stdout + out.stderr and not os.path.exists("/tmp/new-file-by-sandbox")


def test_the_worker_replies_are_checked(monkeypatch):
    worker = SandboxWorker(_archive(H.Honest()), 1, 8, 8)
    monkeypatch.setattr(worker, "num_classes", 5)             # the worker's logits no longer fit the model's spec
    from certlib.sandbox.runner import SandboxedModule, SandboxError
    with pytest.raises(SandboxError, match="expected"):
        SandboxedModule(worker)(torch.rand(2, 1, 8, 8))
    assert np.frombuffer(worker.archive.tobytes(), np.uint8).size > 0


def test_a_model_that_loops_while_loading_is_refused_within_the_limit():
    start = time.monotonic()
    with pytest.raises(ModelTimeout, match="loading and probing it"):
        SandboxWorker(_archive(H.LoopsAlways()), 1, 8, 8, timeout=3.0)
    assert time.monotonic() - start < 3.0 + 10.0            # the limit plus starting the worker


def test_a_model_without_input_gradient_fails_with_a_reason():
    model = models.load_torchscript(_archive(H.NoGradient()), 1, 8, 8)
    assert any("no finite input gradient" in n for n in model.notes)
    with pytest.raises(ModelError, match="no input gradient|does not require grad"):
        attributions.make_attribution("grad", model).attribute(torch.rand(2, 1, 8, 8), 0)
    occlusion = attributions.make_attribution("occlusion", model).attribute(torch.rand(2, 1, 8, 8), 0)
    assert occlusion.shape == (2, 8, 8)                       # forward-only methods still work


def test_an_unloadable_archive_gives_a_reason():
    import zipfile

    data = io.BytesIO()
    with zipfile.ZipFile(data, "w") as z:
        z.writestr("archive/code/__torch__/m.py", "class M(Module):\n  pass\n")
        z.writestr("archive/constants.pkl", b"not a pickle")
        z.writestr("archive/data.pkl", b"not a pickle either")
    with pytest.raises(ModelError) as info:
        models.load_torchscript(data.getvalue(), 1, 8, 8)
    assert len(str(info.value).split(":", 1)[-1].strip()) > 3, str(info.value)


def test_huge_n_and_targets_are_errors_not_crashes():
    from certlib.pixel import cert as pixel_cert
    from certlib.errors import CertlibError

    with pytest.raises(CertlibError, match="n must be an integer in"):
        pixel_cert.decide(np.zeros((4, 4), int), np.zeros((4, 4), np.int8), 10**10, 0.25, 0.75, 1e-3)
    model = models.load_model("digits_sigma0.25")
    with pytest.raises(CertlibError, match="out of range"):
        attributions.make_attribution("grad", model).attribute(torch.rand(1, 1, 32, 32), 10**20)
