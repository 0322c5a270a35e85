"""`Detector`: the one entry point for detection from Python, and what the commands run.

    from detector import Detector
    detector = Detector.load(["runs/a/last.pt", "runs/b/last.pt"], device="auto")
    result = detector("photo.jpg")          # or an RGB uint8 ndarray [H, W, 3]
    result.boxes, result.scores, result.labels
    for result in detector.detect_many(["a.jpg", "b.jpg"], workers=2):
        ...

A `Detector` holds the ensemble's members (prepared once for its inference path), the
proposals they were trained with (computed by the checkpoint's proposer, or read from a
proposal cache) and the post-processing settings. The detect and test commands and training's
validation (`detector.evaluation.evaluate_model`) all run through it, so there is one path.

Two backends run the networks: PyTorch (the members on their device), or ONNX Runtime on the
CPU (an exported file, or the checkpoints exported once and cached), the CPU default. This
module imports no torch itself: over ONNX Runtime, loading a cached export, warping, the
networks and the post-processing are numpy and ONNX Runtime, which saves the 2-4 s torch's
import costs every command here (BENCHMARKS.md, "The main command end to end").

Images are read in their stored pixel grid: EXIF orientation is never applied, because
annotations and proposal caches refer to the stored pixels (`eval.datasets.read_image`).
Boxes are float32 ``(x1, y1, x2, y2)`` in pixels of that grid; labels 1..K name
``classes[label - 1]``.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from detector.export_cache import onnx_ensemble, runtime_available
from detector.postprocess import PostProcess
from detector.prefetch import prefetch_inputs
from detector.records import DetectionResult, Ensemble, proposals_for
from detector.runtime import (OnnxMembers, backend_or_default, check_backend, classify_exported,
                              is_exported_file, load_exported, normalized_pixels)
from eval.datasets import read_image
from eval.errors import DetectionError
from proposals import devices
from proposals.cache import ProposalCache
from proposals.combined import proposer_for
from proposals.defaults import MAX_PER_IMAGE, NMS_IOU, REGION_BATCH, SCORE_THRESHOLD
from proposals.spec import ModelSpec

if TYPE_CHECKING:  # the torch backend's types; this module imports no torch (see the docstring)
    import torch

    from detector.ensemble import InferencePath

Proposer = Callable[[np.ndarray], np.ndarray]


def inference_path_for(device: torch.device, precision: str = "auto",
                       channels_last: bool | None = None, stacked: bool | None = None,
                       compile: bool | None = None) -> InferencePath:
    """The path detection runs on ``device``: `default_path(device)` with ``precision``'s
    autocast (auto: bf16 on CUDA, float32 on the CPU) and channels_last as given (None: on for
    the CPU, `proposals.devices.default_channels_last`), changed by the other choices (None:
    off)."""
    from detector.ensemble import default_path

    if channels_last is None:
        channels_last = devices.default_channels_last(device)
    path = replace(default_path(device), autocast=devices.autocast_for(precision, device),
                   channels_last=channels_last)
    if stacked is not None:
        path = replace(path, stacked=stacked)
    if compile is not None:
        path = replace(path, compile="inductor" if compile else None)
    return path


def runs_on_onnxruntime(backend: str, device: torch.device | str, precision: str = "auto",
                        channels_last: bool | None = None, stacked: bool | None = None,
                        compile: bool | None = None) -> bool:
    """Whether ``backend`` runs checkpoints on ONNX Runtime: asked for, or ``auto`` on a CPU
    (``device`` cpu, or auto on a machine without a GPU) where the exporter and ONNX Runtime are
    installed and no torch-only choice is made. Answered without importing torch where the
    machine has no GPU driver (`proposals.devices.resolves_to_cpu`)."""
    if backend != "auto":
        return backend == "onnxruntime"
    torch_only = precision not in ("auto", "fp32") or any(
        choice is not None for choice in (channels_last, stacked, compile))
    return not torch_only and runtime_available() and devices.resolves_to_cpu(device)


def check_choices(checkpoints: Sequence[str | os.PathLike], *,
                  imagenet_weights: str | os.PathLike | None = None,
                  stacked: bool | None = None, compile: bool | None = None) -> None:
    """The combinations `Detector.load` refuses, before any file is read (the commands call it
    before they make their output folders). Messages name the flag and the keyword."""
    if stacked and compile:
        raise DetectionError("--stacked and --compile (stacked=, compile=) cannot be combined; "
                             "choose one of --stacked and --compile")
    if stacked and len(checkpoints) < 2:
        raise DetectionError("--stacked (stacked=True) stacks an ensemble's members, but one "
                             "network is given; drop --stacked or pass two or more --checkpoint")
    if imagenet_weights is not None and checkpoints:
        raise DetectionError(f"imagenet_weights {imagenet_weights} applies only without a "
                             "checkpoint (--imagenet-weights with --checkpoint: the former is the "
                             "ImageNet baseline's); drop one of them")


def check_batch_size(batch_size: int) -> None:
    """Refuse a region batch that cannot work, naming it."""
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise DetectionError(f"--batch-size {batch_size} (batch_size={batch_size!r}): must be a "
                             "whole number of at least 1")


class Detector:
    """An ensemble of region classifiers ready to detect, on one device.

    Args:
        members: classifiers in eval mode on ``device`` that agree on classes and warp, or an
            exported ensemble in ONNX Runtime (`detector.runtime.OnnxMembers`, on the CPU).
        spec: their `ModelSpec` (input size, context padding).
        classes: label ``i`` is ``classes[i - 1]``.
        device: where the members are; images go there.
        path: how the networks run (default `default_path(device)`: bf16 autocast on CUDA,
            plain float32 on the CPU; `load` and the commands run `inference_path_for`).
        cache: proposals read from this cache (key: the image id) instead of computed.
        proposer: computes an image's proposals where there is no cache (default: GoogLeNet's
            selective search); must be picklable for ``detect_many(workers >= 1)``.
        postprocess: score threshold, per-class NMS and top-k (`PostProcess`, R-CNN's).
        batch_size: regions warped and classified at once (bounds memory).
    """

    def __init__(self, members: Sequence[torch.nn.Module] | OnnxMembers, spec: ModelSpec,
                 classes: Sequence[str], device: torch.device | str, *,
                 path: InferencePath | None = None, cache: ProposalCache | None = None,
                 proposer: Proposer | None = None, postprocess: PostProcess = PostProcess(),
                 batch_size: int = REGION_BATCH) -> None:
        check_batch_size(batch_size)
        self.spec, self.classes = spec, tuple(classes)
        self.backend = "onnxruntime" if isinstance(members, OnnxMembers) else "torch"
        if self.backend == "onnxruntime":  # numpy and ONNX Runtime only: no torch
            self.device, self.path, self.members = "cpu", None, members
        else:
            import torch

            from detector.ensemble import default_path, prepare_members

            self.device = torch.device(device)
            self.path = path or default_path(self.device)
            self.members = prepare_members(list(members), self.path)
        self.cache, self.proposer = cache, proposer
        self.postprocess, self.batch_size = postprocess, batch_size

    @classmethod
    def load(cls, checkpoints: Sequence[str | os.PathLike] = (),
             device: torch.device | str = "auto", *, backend: str | None = None,
             imagenet_weights: str | os.PathLike | None = None,
             proposals: str | os.PathLike | ProposalCache | None = None,
             precision: str = "auto", channels_last: bool | None = None,
             stacked: bool | None = None, compile: bool | None = None,
             score_threshold: float = SCORE_THRESHOLD, nms_iou: float = NMS_IOU,
             max_per_image: int = MAX_PER_IMAGE, batch_size: int | None = None
             ) -> "Detector":
        """A detector from checkpoints (one per ensemble member), or without any, R-CNN's "no
        fine-tuning" baseline: torchvision's 1,000-class ImageNet GoogLeNet (weights through
        torchvision's weights API, or ``imagenet_weights``, a local torchvision GoogLeNet
        state-dict file such as ``googlenet-1378be20.pth``).

        ``proposals``: a proposal cache (folder or `ProposalCache`) to read proposals from;
        default: computed as the checkpoint's were. The inference path is
        `inference_path_for(device, precision, channels_last, stacked, compile)`. Every value is
        checked before a checkpoint is read.

        ``backend``: what runs the networks. ``"torch"``: PyTorch. ``"onnxruntime"``: ONNX
        Runtime on the CPU (float32, `detector.runtime.default_threads`), over one file of
        tools/export.py, or over the checkpoints exported once and cached
        (`detector.export_cache`); proposals and post-processing are the torch backend's, and
        ONNX Runtime warps the regions bit-identically. ``"auto"``: ONNX Runtime on a CPU
        where it is installed and no torch-only choice (bf16, channels_last, stacked, compile)
        is made (the fastest float32 path, BENCHMARKS.md), else PyTorch. None (default): the
        ``GDET_BACKEND`` environment variable if set, else ``"auto"``. A cached export (and an
        exported file) loads and detects without importing torch.
        ``batch_size`` None: the device's (`proposals.devices.default_region_batch`: 256 on
        CUDA, 64 on the CPU).
        """
        postprocess = PostProcess(score_threshold, nms_iou, max_per_image)
        if batch_size is not None:
            check_batch_size(batch_size)
        check_backend(backend, checkpoints, device=device, precision=precision,
                      imagenet_weights=imagenet_weights, channels_last=channels_last,
                      stacked=stacked, compile=compile)
        backend = backend_or_default(backend)
        exported = is_exported_file(checkpoints)
        check_choices(checkpoints, imagenet_weights=imagenet_weights, stacked=stacked,
                      compile=compile)
        if exported:
            device, ensemble = "cpu", load_exported(checkpoints[0])
        elif runs_on_onnxruntime(backend, device, precision, channels_last, stacked, compile):
            device = "cpu"  # the export runs there, and so does PyTorch where it cannot be made
            ensemble = onnx_ensemble(
                checkpoints, imagenet_weights, required=backend == "onnxruntime",
                load=lambda: load_model(list(checkpoints), device, imagenet_weights))
        else:
            device = devices.pick_device(device, "device")
            ensemble = load_model(list(checkpoints), device, imagenet_weights)
        path = None
        if not isinstance(ensemble.members, OnnxMembers):  # PyTorch (a fallback said why)
            path = inference_path_for(device, precision, channels_last, stacked, compile)
        cache, proposer = proposal_source(proposals, ensemble, [str(c) for c in checkpoints])
        return cls(ensemble.members, ensemble.spec, ensemble.classes, device, path=path,
                   cache=cache, proposer=proposer, postprocess=postprocess,
                   batch_size=devices.default_region_batch(device) if batch_size is None
                   else batch_size)

    def __call__(self, image: str | os.PathLike | np.ndarray | torch.Tensor,
                 proposals: np.ndarray | torch.Tensor | None = None, *,
                 image_id: int | str | None = None) -> DetectionResult:
        """Detections in one image: a file path (read in its stored pixel grid), an RGB uint8
        ``ndarray [H, W, 3]`` or ``Tensor [3, H, W]``. ``proposals``: float32 ``[N, 4]`` pixel
        boxes, or None to compute them (or read them from the cache under ``image_id``, default
        the file's stem)."""
        path = None
        if isinstance(image, (str, os.PathLike)):
            path, image = str(image), read_image(image)
            image_id = Path(path).stem if image_id is None else image_id
        if proposals is None:
            if self.cache is not None and image_id is None:
                raise DetectionError("an image array with a proposal cache needs its image_id "
                                     "(the cache's key); pass image_id= or proposals=")
            proposals = proposals_for(image, image_id, path or "image array", cache=self.cache,
                                      proposer=self.proposer)
        return self._detect(image, proposals, image_id, path)

    def _detect(self, image: np.ndarray | torch.Tensor, proposals: np.ndarray | torch.Tensor,
                image_id: int | str | None, path: str | None) -> DetectionResult:
        """The detection path on one image and its proposals: warp every proposal with its
        context, classify it with every member, average their softmax, per-class NMS, top-k."""
        classify = self._classify_onnx if self.backend == "onnxruntime" else self._classify_torch
        boxes, probs, deltas, size = classify(image, proposals)
        boxes, scores, labels = self.postprocess(boxes, probs, deltas, size,
                                                 background=self.members[0].background)
        return DetectionResult(boxes, scores, labels, image_id, path, len(proposals))

    def _classify_onnx(self, image: np.ndarray | torch.Tensor,
                       proposals: np.ndarray | torch.Tensor) -> tuple:
        """(boxes, mean softmax, mean deltas, (height, width)) by ONNX Runtime, in numpy."""
        if not isinstance(image, np.ndarray):  # a uint8 Tensor [3, H, W], as the torch path takes
            if getattr(image, "ndim", None) != 3 or image.shape[0] != 3:
                raise DetectionError(f"image tensor has shape {tuple(image.shape)}; expected "
                                     "[3, H, W] RGB (permute an [H, W, 3] tensor with "
                                     ".permute(2, 0, 1))")
            image = image.detach().cpu().permute(1, 2, 0).numpy()
        pixels = normalized_pixels(image)
        boxes = _numpy(proposals).astype(np.float32, copy=False)
        probs, deltas = classify_exported(
            pixels, boxes, self.members, input_size=self.spec.input_size,
            context_pad=self.spec.context_pad, batch_size=self.batch_size)
        return boxes, probs, deltas, pixels.shape[1:]

    def _classify_torch(self, image: np.ndarray | torch.Tensor,
                        proposals: np.ndarray | torch.Tensor) -> tuple:
        """(boxes, mean softmax, mean deltas, (height, width)) by the PyTorch members on the
        device, brought back as numpy for the post-processing."""
        import torch

        from detector.pipeline import classify_regions
        from proposals.networks import channels_first, normalize_image

        with torch.inference_mode():
            # Copied to the device as uint8 (4x less than float); ImageNet mean = 0 = warp fill.
            pixels = normalize_image(channels_first(image).to(self.device))
            boxes = torch.as_tensor(proposals, dtype=torch.float32).to(self.device)
            probs, deltas = classify_regions(
                pixels, boxes, self.members, input_size=self.spec.input_size,
                context_pad=self.spec.context_pad, batch_size=self.batch_size, path=self.path)
        return (boxes.cpu().numpy(), probs.cpu().numpy(),
                None if deltas is None else deltas.cpu().numpy(), tuple(pixels.shape[1:]))

    def detect_many(self, items: Iterable[str | os.PathLike | tuple[int | str, str]], *,
                    workers: int = 0, cache: ProposalCache | None = None,
                    keep_going: bool = False) -> Iterator[DetectionResult]:
        """Detections of many images, in the order given: paths (id = the file's stem) or
        ``(image_id, path)`` pairs. ``workers`` processes read and propose the next images
        while this one is classified (`detector.prefetch.prefetch_inputs`); ``cache``
        overrides the detector's. ``keep_going``: an image that cannot be read or proposed
        yields a result with ``error`` set instead of raising."""
        pairs = [(Path(i).stem, str(i)) if isinstance(i, (str, os.PathLike)) else i
                 for i in items]
        inputs = prefetch_inputs(pairs, cache=cache or self.cache, proposer=self.proposer,
                                 workers=workers, keep_going=keep_going)
        with contextlib.closing(inputs):  # an error here stops the workers at once
            for item in inputs:
                if isinstance(item, DetectionResult):  # keep_going: an image that failed
                    yield item
                    continue
                image_id, path, image, proposals = item
                yield replace(self._detect(image, proposals, image_id, path), image=image)

    def describe(self) -> str:
        """E.g. ``"2 network(s) on cpu: fp32"``, ``"... on cpu: onnxruntime (fp32)"``."""
        how = "onnxruntime (fp32)" if self.backend == "onnxruntime" else self.path.describe()
        return f"{len(self.members)} network(s) on {self.device}: {how}"


def load_model(checkpoints: list[str | os.PathLike], device: torch.device | str,
               imagenet_weights: str | os.PathLike | None = None) -> Ensemble:
    """The checkpoints' PyTorch ensemble, or without any, torchvision's ImageNet GoogLeNet."""
    from detector.pipeline import imagenet_ensemble, load_ensemble
    from proposals.networks import WeightsUnavailable

    if checkpoints:
        return load_ensemble(checkpoints, device)
    try:
        return imagenet_ensemble(device, imagenet_weights or "imagenet")
    except WeightsUnavailable as e:
        # The ways out a detector's user has: the weights as a local file, or a trained model.
        if str(imagenet_weights or "imagenet") == "imagenet":
            ways = "or name the file: --imagenet-weights FILE (imagenet_weights=FILE)"
        else:
            ways = ("pass a copy of torchvision's googlenet-1378be20.pth as --imagenet-weights "
                    "(imagenet_weights=), or drop it to download the weights")
        raise WeightsUnavailable(f"{e}; {ways}; or detect with a model of your own: "
                                 "--checkpoint CKPT (README, 'Offline')") from None


def _numpy(values: np.ndarray | torch.Tensor) -> np.ndarray:
    """An array, or a tensor's values as one (copied from its device)."""
    return values if isinstance(values, np.ndarray) else values.detach().cpu().numpy()


def proposal_source(proposals: str | os.PathLike | ProposalCache | None, ensemble: Ensemble,
                    checkpoints: list[str]) -> tuple[ProposalCache | None, Proposer | None]:
    """(the cache, None) when ``proposals`` names one, else (None, the proposer the
    checkpoint was trained with: selective search, or selective search + its MultiBox)."""
    if proposals is not None:
        cache = proposals if isinstance(proposals, ProposalCache) else \
            ProposalCache.open(proposals)
        if checkpoints and (cache.method, cache.params) != (ensemble.proposal_method,
                                                           ensemble.proposal_params):
            # Allowed (e.g. MultiBox boxes added at test time), but worth knowing.
            print(f"note: {cache.root} holds {cache.method} proposals with {cache.params}; "
                  f"{checkpoints[0]} was trained on {ensemble.proposal_method} with "
                  f"{ensemble.proposal_params}")
        return cache, None
    where = checkpoints[0] if checkpoints else "the ImageNet model"
    return None, proposer_for(ensemble.proposal_method, ensemble.proposal_params, where,
                              ensemble.proposal_network)

