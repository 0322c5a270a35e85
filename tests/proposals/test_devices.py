"""proposals.devices, the one place for --device, ranks, the process group and precision."""
import pytest
import torch

from eval.errors import DetectionError
from proposals import devices


def test_world_reads_torchrun_s_environment(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert devices.world() == (0, 1)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert devices.world() == (1, 3)
    monkeypatch.setenv("RANK", "3")
    with pytest.raises(DetectionError, match="RANK=3 is outside WORLD_SIZE=3"):
        devices.world()
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(DetectionError, match="must be integers"):
        devices.world()
    monkeypatch.setenv("LOCAL_RANK", "-1")
    with pytest.raises(DetectionError, match="LOCAL_RANK='-1'"):
        devices.local_rank()


def test_ranks_without_torchrun_s_rendezvous(monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(DetectionError, match="no MASTER_ADDR: start the ranks with torchrun"):
        devices.join_process_group(torch.device("cpu"))
    assert devices.join_process_group(required=False) is False  # each rank alone (propose)
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert devices.join_process_group() is False  # one process: no group


def test_device_and_precision_choices():
    assert devices.pick_device("cpu") == torch.device("cpu")
    with pytest.raises(DetectionError, match="--device tpu: unknown device"):
        devices.pick_device("tpu")
    with pytest.raises(DetectionError, match="device gpu: unknown"):
        devices.pick_device("gpu", "device")
    cpu = torch.device("cpu")
    assert devices.autocast_for("auto", cpu) is None  # fp32 on CPU
    assert devices.autocast_for("bf16", cpu) is torch.bfloat16
    assert devices.autocast_for("fp32", torch.device("cuda", 0)) is None
    assert devices.default_autocast(torch.device("cuda", 0)) is torch.bfloat16
    with pytest.raises(DetectionError, match="precision 'fp16'"):
        devices.autocast_for("fp16", cpu)
    with devices.autocast(cpu, None):
        assert not torch.is_autocast_enabled("cpu")
    with devices.autocast(cpu, torch.bfloat16):
        assert torch.is_autocast_enabled("cpu")


def test_barrier_waits_as_long_as_it_is_told(monkeypatch):
    """A rank of a proposal run may finish hours before the slowest (torch's group default is
    30 minutes): the propose command's barrier passes its own, longer timeout to torch."""
    import datetime

    from detector.cli import propose

    import torch.distributed as dist

    seen = []
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "barrier", lambda timeout=None: seen.append(timeout))
    devices.barrier()
    devices.barrier(propose.WAIT_FOR_RANKS)
    assert seen == [None, propose.WAIT_FOR_RANKS]
    assert propose.WAIT_FOR_RANKS >= datetime.timedelta(days=1)
