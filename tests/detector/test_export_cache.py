"""detector.export_cache and backend="auto": on a CPU with ONNX Runtime installed, checkpoints run
on ONNX Runtime (exported once, kept in the user's cache under a digest of the checkpoint
files) and detect as PyTorch float32 does; a second load reads the cache without importing
torch; a damaged cache file is exported
again; a cache that cannot be written, or an export that fails, never stops detection (auto
falls back to PyTorch with a warning, an explicit --backend onnxruntime is one error); any
torch-only choice keeps PyTorch."""
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime", reason="the `onnx` extra (onnxruntime) is not installed")
pytest.importorskip("onnxscript", reason="the `onnx` extra (onnxscript) is not installed")

from detector import Detector  # noqa: E402
from detector import export as export_module  # noqa: E402
from detector import export_cache  # noqa: E402
from detector.api import runs_on_onnxruntime  # noqa: E402
from detector.classifier import build_classifier  # noqa: E402
from eval.errors import DetectionError  # noqa: E402
from proposals.cache import ProposalCache  # noqa: E402
from proposals.checkpoint import ModelSpec, save_checkpoint  # noqa: E402
from proposals.combined import ProposalConfig, build_proposer, proposal_record  # noqa: E402
from proposals.config import SelectiveSearchConfig  # noqa: E402
from proposals.multibox import MultiBox, save_multibox  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread", "default_backend")


@pytest.fixture
def default_backend(monkeypatch):
    """The real default backend (conftest.py sets GDET_BACKEND=torch for the other tests)."""
    monkeypatch.delenv("GDET_BACKEND", raising=False)


def exports(folder) -> list:
    return sorted(folder.glob("*.onnx")) if folder.is_dir() else []


@pytest.fixture(scope="module")
def first_load(tiny_run, tmp_path_factory):
    """The tiny run's last.pt loaded with the defaults into an empty user cache, once a module
    (the one real export here): (detector, cache folder, the exported bytes)."""
    home = tmp_path_factory.mktemp("first_load")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(home))
        patch.delenv("GDET_BACKEND", raising=False)
        detector = Detector.load([tiny_run / "last.pt"], device="cpu")
    folder = home / "googlenet-detection" / "onnx"
    (exported,) = exports(folder)
    return detector, folder, exported.read_bytes()


@pytest.fixture
def cache_home(tmp_path, monkeypatch):
    """A user cache of the test's own (``XDG_CACHE_HOME``), empty."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "googlenet-detection" / "onnx"


@pytest.fixture
def quick_export(first_load, monkeypatch):
    """Exporting last.pt again gives `first_load`'s bytes at once (what torch's exporter gives
    for the same weights and metadata), so the tests below exercise the cache, not the
    exporter."""
    calls = []

    def export(ensemble, metadata):
        calls.append(metadata["digest"])
        return first_load[2]

    monkeypatch.setattr(export_module, "onnx_model", export)
    return calls


def test_auto_runs_checkpoints_on_onnxruntime_as_pytorch_fp32_detects(tiny, tiny_run, first_load,
                                                                     monkeypatch):
    checkpoint = tiny_run / "last.pt"
    auto, folder, _ = first_load
    assert auto.backend == "onnxruntime"
    assert auto.describe() == "1 network(s) on cpu: onnxruntime (fp32)"
    assert len(exports(folder)) == 1
    reference = Detector.load([checkpoint], device="cpu", backend="torch", precision="fp32")
    assert reference.backend == "torch"
    found = 0
    for i in range(4):
        want, got = reference(tiny / f"im{i}.png"), auto(tiny / f"im{i}.png")
        np.testing.assert_array_equal(got.labels, want.labels)
        np.testing.assert_allclose(got.boxes, want.boxes, atol=1e-3)
        np.testing.assert_allclose(got.scores, want.scores, atol=1e-4, rtol=0)
        found += len(want.boxes)
    assert found > 0
    # The second load reads the cache: exporting again would fail here.
    monkeypatch.setenv("XDG_CACHE_HOME", str(folder.parents[1]))
    monkeypatch.setattr(export_module, "onnx_model", pytest.fail)
    again = Detector.load([checkpoint], device="cpu")
    assert again.backend == "onnxruntime" and len(exports(folder)) == 1
    np.testing.assert_array_equal(again(tiny / "im1.png").scores, auto(tiny / "im1.png").scores)


def test_the_key_follows_the_checkpoint_files_and_the_software(tiny_run, tmp_path, monkeypatch):
    first = export_cache.source_digest([tiny_run / "last.pt"])
    copy = tmp_path / "copy.pt"
    copy.write_bytes((tiny_run / "last.pt").read_bytes())
    assert export_cache.source_digest([copy]) == first  # the bytes, not the name
    changed = bytearray(copy.read_bytes())
    changed[-100] ^= 1
    copy.write_bytes(bytes(changed))
    assert export_cache.source_digest([copy]) != first
    assert export_cache.source_digest([tiny_run / "epoch_001.pt"]) != first
    assert export_cache.source_digest([tiny_run / "last.pt"] * 2) != first
    assert export_cache.source_digest([]) != export_cache.source_digest([], tiny_run / "last.pt")
    monkeypatch.setattr(export_cache, "_version", lambda name: "0.0" + name)
    assert export_cache.source_digest([tiny_run / "last.pt"]) != first
    with pytest.raises(DetectionError, match="missing.pt"):
        export_cache.source_digest([tmp_path / "missing.pt"])


def test_a_cached_export_loads_and_detects_without_torch(tiny, tiny_run, first_load):
    """The point of keying on the files: in a fresh process, the load and the detection of a
    cached model import no torch (2-4 s of every command's start here)."""
    _, folder, _ = first_load
    script = ("import sys\n"
              "from detector import Detector\n"
              f"d = Detector.load([{str(tiny_run / 'last.pt')!r}])\n"
              f"r = d({str(tiny / 'im0.png')!r})\n"
              "assert d.backend == 'onnxruntime', d.backend\n"
              "print(len(r.boxes), sorted(m for m in sys.modules if m.split('.')[0] in "
              "('torch', 'torchvision')))\n")
    env = {**os.environ, "XDG_CACHE_HOME": str(folder.parents[1])}
    env.pop("GDET_BACKEND", None)
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    count, modules = done.stdout.split(" ", 1)
    assert modules.strip() == "[]"
    assert int(count) == len(first_load[0](tiny / "im0.png").boxes)


def test_a_damaged_cache_file_is_exported_again(tiny, tiny_run, first_load, cache_home,
                                                quick_export):
    assert Detector.load([tiny_run / "last.pt"], device="cpu").backend == "onnxruntime"
    assert len(quick_export) == 1
    (cached,) = exports(cache_home)
    assert cached.read_bytes() == first_load[2]
    cached.write_bytes(b"not onnx")
    detector = Detector.load([tiny_run / "last.pt"], device="cpu")
    assert detector.backend == "onnxruntime" and len(quick_export) == 2
    assert cached.read_bytes() == first_load[2]
    np.testing.assert_array_equal(detector(tiny / "im0.png").scores,
                                  first_load[0](tiny / "im0.png").scores)


def test_a_cache_that_cannot_be_written_still_runs_from_memory(tiny, tiny_run, tmp_path,
                                                               monkeypatch, quick_export):
    (tmp_path / "file").write_text("a file where the cache folder would be")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "file"))
    with pytest.warns(UserWarning, match="could not be kept"):
        detector = Detector.load([tiny_run / "last.pt"], device="cpu")
    assert detector.backend == "onnxruntime"
    detector(tiny / "im0.png")


def test_a_failed_export_falls_back_to_pytorch_or_is_one_error(tiny_run, cache_home,
                                                               monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("an operator the exporter does not know")

    monkeypatch.setattr(export_module, "onnx_model", broken)
    with pytest.warns(UserWarning, match="running on PyTorch.*the export failed"):
        detector = Detector.load([tiny_run / "last.pt"], device="cpu")
    assert detector.backend == "torch" and not exports(cache_home)
    with pytest.raises(DetectionError, match="--backend onnxruntime: the export failed"):
        Detector.load([tiny_run / "last.pt"], device="cpu", backend="onnxruntime")


def test_an_export_that_disagrees_with_pytorch_is_not_used(tiny_run, cache_home, monkeypatch,
                                                          quick_export):
    monkeypatch.setattr(export_module, "TOLERANCE", -1.0)  # no export can pass
    with pytest.warns(UserWarning, match="differs from PyTorch's"):
        detector = Detector.load([tiny_run / "last.pt"], device="cpu")
    assert detector.backend == "torch" and not exports(cache_home)


def test_torch_only_choices_and_other_devices_keep_pytorch(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert runs_on_onnxruntime("auto", cpu)
    assert runs_on_onnxruntime("auto", cpu, precision="fp32")
    assert not runs_on_onnxruntime("auto", cuda)
    assert not runs_on_onnxruntime("auto", cpu, precision="bf16")
    assert not runs_on_onnxruntime("auto", cpu, channels_last=True)
    assert not runs_on_onnxruntime("auto", cpu, channels_last=False)
    assert not runs_on_onnxruntime("auto", cpu, stacked=False)
    assert not runs_on_onnxruntime("auto", cpu, compile=True)
    assert not runs_on_onnxruntime("torch", cpu)
    assert runs_on_onnxruntime("onnxruntime", cpu)
    monkeypatch.setattr("detector.api.runtime_available", lambda: False)
    assert not runs_on_onnxruntime("auto", cpu)


def test_without_onnxruntime_auto_is_pytorch_and_onnxruntime_says_what_to_install(
        tiny_run, cache_home, monkeypatch):
    monkeypatch.setattr("detector.api.runtime_available", lambda: False)
    monkeypatch.setattr(export_cache, "runtime_available", lambda: False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning: PyTorch is simply the path
        assert Detector.load([tiny_run / "last.pt"], device="cpu").backend == "torch"
    with pytest.raises(DetectionError, match=r"\[onnx\]"):
        Detector.load([tiny_run / "last.pt"], device="cpu", backend="onnxruntime")
    assert not exports(cache_home)


def test_the_detect_command_runs_on_onnxruntime_by_default(tiny, tiny_run, first_load, tmp_path,
                                                          monkeypatch, capsys):
    from detector.cli.detect import main as detect

    _, folder, _ = first_load
    monkeypatch.setenv("XDG_CACHE_HOME", str(folder.parents[1]))  # its export is there
    monkeypatch.setattr(export_module, "onnx_model", pytest.fail)
    assert detect([str(tiny / "im0.png"), "--checkpoint", str(tiny_run / "last.pt"),
                   "--out", str(tmp_path / "out")]) == 0
    assert "1 network(s) on cpu: onnxruntime (fp32)" in capsys.readouterr().out
    monkeypatch.setenv("GDET_BACKEND", "torch")  # the variable sets the default
    assert detect([str(tiny / "im0.png"), "--checkpoint", str(tiny_run / "last.pt"),
                   "--out", str(tmp_path / "out2")]) == 0
    assert "1 network(s) on cpu: channels_last" in capsys.readouterr().out
    with pytest.raises(DetectionError, match="drop GDET_BACKEND=torch or pass --backend onnx"):
        Detector.load([tiny_run / "never_read.onnx"])  # the variable, not a flag, chose torch
    monkeypatch.setenv("GDET_BACKEND", "tensorrt")
    with pytest.raises(DetectionError, match="GDET_BACKEND='tensorrt'"):
        Detector.load([tiny_run / "last.pt"], device="cpu")


def test_a_model_on_multibox_proposals_runs_its_classifiers_on_onnxruntime(tiny, tmp_path,
                                                                          cache_home):
    """Its classifiers are exported; its MultiBox network stays in the checkpoint and proposes
    with PyTorch, also when the export is read from the cache (which does not carry it)."""
    torch.manual_seed(1)
    priors = torch.tensor([[0.1, 0.1, 0.6, 0.7], [0.3, 0.2, 0.9, 0.9], [0.0, 0.5, 0.4, 1.0]])
    save_multibox(tmp_path / "mb.pt", MultiBox(priors, 32), epoch=2)
    proposer = build_proposer(ProposalConfig(SelectiveSearchConfig(max_boxes=20),
                                             str(tmp_path / "mb.pt"), multibox_top=2))
    cache = ProposalCache.create(tmp_path / "cache", proposer.method, proposer.params,
                                 proposer.version)
    spec = ModelSpec(1, 32, 2)
    model = build_classifier(1, weights=None, input_size=32)
    save_checkpoint(tmp_path / "det.pt", classes=["a"], spec=spec, state_dict=model.state_dict(),
                    proposals=proposal_record(cache, tmp_path / "mb.pt"))
    reference = Detector.load([tmp_path / "det.pt"], device="cpu", backend="torch",
                              precision="fp32")
    want = reference(tiny / "im0.png")
    for _ in range(2):  # exported now, then read from the cache
        detector = Detector.load([tmp_path / "det.pt"], device="cpu")
        assert detector.backend == "onnxruntime"
        got = detector(tiny / "im0.png")
        assert got.num_proposals == want.num_proposals  # selective search + MultiBox's 2
        np.testing.assert_array_equal(got.labels, want.labels)
        np.testing.assert_allclose(got.scores, want.scores, atol=1e-4, rtol=0)
    assert len(exports(cache_home)) == 1
