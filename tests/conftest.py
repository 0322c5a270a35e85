"""Shared fixtures: one torch thread, torchrun on a free port, and the session's tiny dataset
with its proposal cache and one trained checkpoint."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def user_cache_and_backend(tmp_path_factory):
    """For the session, and the commands its tests run: a user cache of its own
    (``XDG_CACHE_HOME``: an ONNX export is never written into the user's home), and PyTorch as
    the default backend (``GDET_BACKEND=torch``): exporting each test's model for ONNX Runtime
    would cost ~10 s a model. tests/detector/test_export_cache.py unsets it to test the real
    default, ``auto``; the other ONNX tests ask for their backend by name."""
    cache = tmp_path_factory.mktemp("xdg_cache")
    before = {name: os.environ.get(name) for name in ("XDG_CACHE_HOME", "GDET_BACKEND")}
    os.environ.update(XDG_CACHE_HOME=str(cache), GDET_BACKEND="torch")
    yield cache
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module: on a busy 2-core machine OpenMP threads wait on each other
    (a forward pass measured 15x slower with 2 threads than with 1 under load)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- torchrun ----------------------------------------------------------------------------------

def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now: the OS picks it (bind to port 0) and
    it is let go at once. Another process may take it before torchrun binds it: `run_torchrun`
    starts again on a fresh one then."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_taken(stderr: str) -> bool:
    """Whether torchrun failed because its port was taken (the rendezvous store's EADDRINUSE)."""
    return "EADDRINUSE" in stderr or "address already in use" in stderr.lower()


def run_torchrun(script_args: list, nproc: int = 2, attempts: int = 3,
                 timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --nproc-per-node NPROC SCRIPT ARGS`` in the repository,
    one OpenMP thread a rank, on a port from `free_port`. When the port was taken in between,
    the rendezvous fails before any rank starts (nothing is written), and the command runs again
    on a fresh port, ``attempts`` times at most. ``timeout`` only stops a hang; no verdict
    depends on how long a run takes."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for _ in range(attempts):
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
                   "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
                   *map(str, script_args)]
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=timeout)
        if done.returncode == 0 or not port_taken(done.stderr):
            break
    return done


@pytest.fixture
def torchrun():
    """`run_torchrun`: a script under torchrun with its ranks on a free port."""
    return run_torchrun


# --- torchvision's downloads ------------------------------------------------------------------

@pytest.fixture
def imagenet_weights_path(tmp_path, monkeypatch) -> Path:
    """Where torchvision looks for its ImageNet GoogLeNet weights before downloading them, in a
    torch hub of the test's own (``TORCH_HOME``): a state dict saved there is what
    ``GoogLeNet_Weights.IMAGENET1K_V1`` loads, as on a machine that downloaded it once."""
    from urllib.parse import urlparse

    from torchvision.models import GoogLeNet_Weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    checkpoints = tmp_path / "torch_home" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    return checkpoints / Path(urlparse(GoogLeNet_Weights.IMAGENET1K_V1.url).path).name


@pytest.fixture
def no_downloads(tmp_path, monkeypatch) -> None:
    """A torch hub (``TORCH_HOME``) where torchvision can neither find nor download weights:
    its ``checkpoints`` is a file, so a download fails before any connection is made, whatever
    the network and the machine's own cache hold."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no_hub"))
    (tmp_path / "no_hub" / "hub").mkdir(parents=True)
    (tmp_path / "no_hub" / "hub" / "checkpoints").write_text("not a folder")


# --- the tiny dataset and its trained checkpoint -----------------------------------------------

def _files(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def _read_only(root: Path):
    """Yields ``root``; at the end of the session, fails if a test changed a file below it."""
    before = _files(root)
    yield root
    assert _files(root) == before, f"a test changed {root}, which tests share: copy it first"


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> Path:
    """tests/tools/_tiny.py's dataset, made once a session and read-only for the tests (a test
    that changes files copies them first): 4 images with a red and a blue rectangle, their VOC
    XMLs, the selective-search cache ``cache/`` and the training config ``tiny.yaml``."""
    from _tiny import make_tiny

    yield from _read_only(make_tiny(tmp_path_factory.mktemp("tiny")))


@pytest.fixture(scope="session")
def tiny_run(tiny, tmp_path_factory) -> Path:
    """tiny.yaml's training as it stands (2 epochs), once a session, read-only: a folder with
    epoch_001.pt, epoch_002.pt, last.pt, metrics.csv and config.yaml. One torch thread, as the
    tests that train and compare weights with it."""
    import torch
    from _tiny import train_tiny

    out = tmp_path_factory.mktemp("tiny_run") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert train_tiny(tiny, out) == 0
    finally:
        torch.set_num_threads(threads)
    yield from _read_only(out)


@pytest.fixture
def fed_fifo(tmp_path):
    """A FIFO at ``tmp_path / name`` with a writer for every reader (``fed_fifo(name)``): code
    that opened it would read an empty file (and fail its test) rather than hang."""
    import os
    import threading

    made = []

    def make(name: str) -> Path:
        fifo = tmp_path / name
        os.mkfifo(fifo)
        stop = threading.Event()

        def feed():
            while not stop.is_set():
                open(fifo, "w").close()  # blocks until a reader opens the FIFO

        writer = threading.Thread(target=feed, daemon=True)
        writer.start()
        made.append((fifo, stop, writer))
        return fifo

    yield make
    for fifo, stop, writer in made:
        stop.set()
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # lets the writer's last open return
        writer.join()
        os.close(fd)
