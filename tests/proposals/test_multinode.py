"""Proposals on several machines: two torchrun "nodes" of one rank each, meeting through the c10d
rendezvous as they would across machines (here both on 127.0.0.1), fill one cache that equals
the cache of one plain process."""
import os
import subprocess
import sys
import uuid
from pathlib import Path

from conftest import REPO, free_port, port_taken
from detector.cli.propose import main

ARGS = ["--min-box-side", "4"]  # as tests/tools/_tiny.py makes its cache: small images
TIMEOUT = 300  # s; only stops a hang, no verdict depends on how long a run takes


def node(port: int, run_id: str, is_host: bool, gt: Path, out: Path) -> subprocess.Popen:
    """One torchrun agent of a 2-node, 1-rank-per-node job running tools/propose.py. One agent
    hosts the rendezvous store (``is_host``: said, not guessed, so that a port someone else
    took is an EADDRINUSE that `port_taken` recognises, not a connection to a stranger)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2",
               "--nproc-per-node", "1", "--rdzv-backend", "c10d",
               "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", run_id,
               "--rdzv-conf", f"is_host={int(is_host)}", "--local-addr", "127.0.0.1",
               "tools/propose.py", "--gt", str(gt), "--out", str(out), *ARGS]
    return subprocess.Popen(command, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_two_nodes(gt: Path, out: Path, attempts: int = 3) -> list[tuple[int, str, str]]:
    """Both agents started together; ``(exit status, stdout, stderr)`` of each. When the
    rendezvous port was taken in between (`free_port`'s race), nothing has run yet: the other
    agent is stopped and both start again on a fresh port, as `run_torchrun` does."""
    for _ in range(attempts):
        port, run_id = free_port(), uuid.uuid4().hex
        agents = [node(port, run_id, is_host, gt, out) for is_host in (True, False)]
        results = []
        try:
            for agent in agents:
                stdout, stderr = agent.communicate(timeout=TIMEOUT)
                results.append((agent.returncode, stdout, stderr))
                if agent.returncode != 0 and port_taken(stderr):
                    break  # the other agent would wait for a rendezvous that cannot happen
        finally:
            for agent in agents:
                if agent.poll() is None:
                    agent.kill()
                    agent.communicate()
        if not any(code != 0 and port_taken(stderr) for code, _, stderr in results):
            break
    return results


def cache_files(out: Path) -> dict[str, bytes]:
    """Every file of a cache by its path below it (boxes, failures, ids, manifest)."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file()}


def test_two_nodes_through_c10d_fill_the_cache_one_process_fills(tiny, tmp_path):
    assert main(["--gt", str(tiny), "--out", str(tmp_path / "one"), *ARGS]) == 0
    results = run_two_nodes(tiny, tmp_path / "two")
    for code, stdout, stderr in results:
        assert code == 0, stdout[-2000:] + stderr[-3000:]
    output = "".join(stdout for _, stdout, _ in results)
    # Each node's rank took its half (every 2nd image), and rank 0 summed up the whole cache
    # after the barrier: both ranks' images were there by then.
    assert "2 images in this shard (1/2)" in output and "2 images in this shard (2/2)" in output
    assert output.count("4/4 images have proposals") == 1
    one, two = cache_files(tmp_path / "one"), cache_files(tmp_path / "two")
    assert len([name for name in one if name.startswith("boxes/")]) == 4
    assert two == one  # the same ids, byte-equal boxes, the same manifest
