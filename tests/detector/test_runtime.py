"""detector.runtime's torch-free pieces and the device answer that lets the ONNX Runtime path
skip torch: normalised pixels bit-identical to the torch path's, ONNX Runtime's thread count,
and `proposals.devices.resolves_to_cpu` / `gpu_possible` (certain answers without torch, torch
asked otherwise)."""
import sys

import numpy as np
import pytest
import torch

from detector import runtime
from eval.datasets import read_image
from eval.errors import DetectionError
from proposals import devices
from proposals.networks import normalize_image

RACCOON = "../shared/data/raccoon/images/raccoon-3.jpg"


def test_normalized_pixels_are_the_torch_paths_bit_for_bit(tmp_path):
    rng = np.random.default_rng(0)
    for image in (read_image(RACCOON), rng.integers(0, 256, (7, 5, 3), dtype=np.uint8),
                  np.arange(256, dtype=np.uint8).repeat(3).reshape(16, 16, 3)):
        got = runtime.normalized_pixels(image)
        want = normalize_image(image).numpy()
        assert got.dtype == np.float32 and got.flags.c_contiguous
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("image, words", [
    (np.zeros((4, 4), np.uint8), "shape"), (np.zeros((4, 4, 4), np.uint8), "shape"),
    (np.zeros((4, 4, 3), np.float32), "dtype float32"), ([[1, 2, 3]], "shape")])
def test_normalized_pixels_refuse_what_is_not_an_rgb_uint8_array(image, words):
    with pytest.raises(DetectionError, match=words):
        runtime.normalized_pixels(image)


def test_onnx_runtime_threads_follow_torch_then_the_environment(monkeypatch):
    torch.set_num_threads(1)
    assert runtime.default_threads() == 1  # torch is loaded here: its (user-set) count
    monkeypatch.delitem(sys.modules, "torch")
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert runtime.default_threads() == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "many")  # not a count: the CPUs this process has
    assert runtime.default_threads() >= 1


def test_the_cpu_is_told_without_torch_where_there_is_no_gpu_driver(monkeypatch):
    asked = []
    monkeypatch.setattr(devices, "pick_device", lambda name, what="--device": asked.append(name)
                        or torch.device("cpu"))
    assert devices.resolves_to_cpu("cpu") and devices.resolves_to_cpu(torch.device("cpu"))
    assert not devices.resolves_to_cpu("cuda") and not devices.resolves_to_cpu("cuda:1")
    assert not devices.resolves_to_cpu("tpu")  # pick_device refuses it later, by name
    assert asked == []
    monkeypatch.setattr(devices, "GPU_DEVICE_FILES", ("/nonexistent/nvidia",))
    monkeypatch.setattr(devices.sys, "platform", "linux")
    assert not devices.gpu_possible()
    assert devices.resolves_to_cpu("auto") and asked == []  # certain: torch not asked
    monkeypatch.setattr(devices, "GPU_DEVICE_FILES", (__file__,))  # a driver file exists
    assert devices.gpu_possible()
    assert devices.resolves_to_cpu("auto") and asked == ["auto"]  # only torch can tell
    monkeypatch.setattr(devices.sys, "platform", "darwin")
    assert not devices.gpu_possible()
    monkeypatch.setattr(devices.sys, "platform", "win32")
    assert devices.gpu_possible()


def test_device_types_are_read_from_names_and_devices_alike():
    assert devices.default_region_batch("cpu") == devices.default_region_batch(
        torch.device("cpu"))
    assert devices.default_region_batch("cuda:1") == devices.default_region_batch(
        torch.device("cuda", 1)) != devices.default_region_batch("cpu")
    assert devices.default_channels_last("cpu") and not devices.default_channels_last("cuda")
