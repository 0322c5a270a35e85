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

import numpy as np
import torch

from proposals.checkpoint import ModelSpec
from eval.datasets import read_image
from detector.ensemble import InferencePath, default_path, prepare_members
from detector.export import (OnnxMembers, backend_or_default, check_backend, classify_exported,
                             is_exported_file, load_exported)
from detector.export_cache import onnx_members, runtime_available
from eval.errors import DetectionError
from detector.pipeline import (DetectionResult, Ensemble, classify_regions, imagenet_ensemble,
                               load_ensemble, proposals_for)
from detector.postprocess import PostProcess
from detector.prefetch import prefetch_inputs
from proposals import devices
from proposals.cache import ProposalCache
from proposals.combined import proposer_for
from proposals.defaults import MAX_PER_IMAGE, NMS_IOU, REGION_BATCH, SCORE_THRESHOLD
from proposals.networks import WeightsUnavailable, channels_first, normalize_image

Proposer = Callable[[np.ndarray], np.ndarray]


def inference_path_for(device: torch.device, precision: str = "auto",
                       channels_last: bool | None = None, stacked: bool | None = None,
                       compile: bool | None = None) -> InferencePath:
    """The path detection runs on ``device``: `default_path(device)` with ``precision``'s
    autocast (auto: bf16 on CUDA, float32 on the CPU) and channels_last as given (None: on for
    the CPU, `proposals.devices.default_channels_last`), changed by the other choices (None:
    off)."""
    if channels_last is None:
        channels_last = devices.default_channels_last(device)
    path = replace(default_path(device), autocast=devices.autocast_for(precision, device),
                   channels_last=channels_last)
    if stacked is not None:
        path = replace(path, stacked=stacked)
    if compile is not None:
        path = replace(path, compile="inductor" if compile else None)
    return path


def runs_on_onnxruntime(backend: str, device: torch.device, precision: str = "auto",
                        channels_last: bool | None = None, stacked: bool | None = None,
                        compile: bool | None = None) -> bool:
    """Whether ``backend`` runs checkpoints on ONNX Runtime: asked for, or ``auto`` on a CPU
    where the exporter and ONNX Runtime are installed and no torch-only choice is made."""
    if backend != "auto":
        return backend == "onnxruntime"
    torch_only = precision not in ("auto", "fp32") or any(
        choice is not None for choice in (channels_last, stacked, compile))
    return device.type == "cpu" and not torch_only and runtime_available()


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
            exported ensemble in ONNX Runtime (`detector.export.OnnxMembers`, on the CPU).
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

    def __init__(self, members: Sequence[torch.nn.Module], spec: ModelSpec,
                 classes: Sequence[str], device: torch.device | str, *,
                 path: InferencePath | None = None, cache: ProposalCache | None = None,
                 proposer: Proposer | None = None, postprocess: PostProcess = PostProcess(),
                 batch_size: int = REGION_BATCH) -> None:
        check_batch_size(batch_size)
        self.device = torch.device(device)
        self.path = path or default_path(self.device)
        self.spec, self.classes = spec, tuple(classes)
        self.backend = "onnxruntime" if isinstance(members, OnnxMembers) else "torch"
        self.members = (members if self.backend == "onnxruntime"
                        else prepare_members(list(members), self.path))
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
        Runtime on the CPU (float32, torch's thread count), over one file of tools/export.py,
        or over the checkpoints exported once and cached (`detector.export_cache`); proposals
        and post-processing are the torch backend's. ``"auto"``: ONNX Runtime on a CPU where
        it is installed and no torch-only choice (bf16, channels_last, stacked, compile) is
        made (the fastest float32 path, BENCHMARKS.md), else PyTorch. None (default): the
        ``GDET_BACKEND`` environment variable if set, else ``"auto"``.
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
        device = devices.pick_device("cpu" if exported or backend == "onnxruntime" else device,
                                     "device")
        check_choices(checkpoints, imagenet_weights=imagenet_weights, stacked=stacked,
                      compile=compile)
        path = inference_path_for(device, precision, channels_last, stacked, compile)
        if exported:
            ensemble = load_exported(checkpoints[0], torch.get_num_threads())
        else:
            ensemble = load_model(list(checkpoints), device, imagenet_weights)
        members = ensemble.members
        if not exported and runs_on_onnxruntime(backend, device, precision, channels_last,
                                                stacked, compile):
            where = str(checkpoints[0]) if checkpoints else "the ImageNet model"
            members = onnx_members(ensemble, where, required=backend == "onnxruntime") or members
        cache, proposer = proposal_source(proposals, ensemble, [str(c) for c in checkpoints])
        return cls(members, ensemble.spec, ensemble.classes, device, path=path,
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

    @torch.inference_mode()
    def _detect(self, image: np.ndarray | torch.Tensor, proposals: np.ndarray | torch.Tensor,
                image_id: int | str | None, path: str | None) -> DetectionResult:
        """The detection path on one image and its proposals: warp every proposal with its
        context, classify it with every member, average their softmax, per-class NMS, top-k."""
        # Copied to the device as uint8 (4x less than float); ImageNet mean = 0 = warp fill.
        pixels = normalize_image(channels_first(image).to(self.device))
        boxes = torch.as_tensor(proposals, dtype=torch.float32).to(self.device)
        classify = classify_exported if self.backend == "onnxruntime" else classify_regions
        probs, deltas = classify(
            pixels, boxes, self.members, input_size=self.spec.input_size,
            context_pad=self.spec.context_pad, batch_size=self.batch_size, path=self.path)
        boxes, scores, labels = self.postprocess(boxes, probs, deltas, tuple(pixels.shape[1:]),
                                                 background=self.members[0].background)
        return DetectionResult(boxes.cpu().numpy(), scores.cpu().numpy(), labels.cpu().numpy(),
                               image_id, path, len(proposals))

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


def load_model(checkpoints: list[str | os.PathLike], device: torch.device,
               imagenet_weights: str | os.PathLike | None = None) -> Ensemble:
    """The checkpoints' ensemble, or without any, torchvision's ImageNet GoogLeNet."""
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

