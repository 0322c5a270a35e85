"""Region warping on ONNX Runtime: `detector.regions.warp_regions` without torch, numpy in and out.

The same R-CNN warp (every proposal context-padded and resized to ``S x S`` in one op) run by
ONNX Runtime's ``RoiAlign`` (opset 16, ``half_pixel`` coordinates, adaptive sampling), which
computes exactly what ``torchvision.ops.roi_align(aligned=True, sampling_ratio=-1)`` does: the
outputs are bit-identical (tests/detector/test_onnx_warp.py holds that). It lets the ONNX
Runtime detection path run without importing torch.

The one-node graph is written here as protobuf bytes by hand (`warp_model`): importing the
``onnx`` package costs ~0.7 s, which every command run would pay; onnxruntime is imported only
when a `Warper` is built.

Coordinate frame: boxes are ``(x1, y1, x2, y2)`` in absolute pixels of the original image, with
pixel ``i`` covering ``[i, i + 1)``, as in `detector.regions`.
"""
from __future__ import annotations

import struct

import numpy as np

from eval.errors import DetectionError
from proposals.defaults import CONTEXT_PAD, INPUT_SIZE
from proposals.spec import WARP_BORDER, check_warp_sizes

# The model's versions: RoiAlign's coordinate_transformation_mode appeared in opset 16; IR
# version 8 is the one that goes with opsets 16-17 (ONNX 1.11-1.12), which every ONNX Runtime
# since 1.11 loads.
OPSET = 16
IR_VERSION = 8
INPUTS = ("image", "rois", "batch_indices")
OUTPUT = "regions"

# How to install ONNX Runtime (and the exporter): the `onnx` extra.
ONNX_EXTRA = "pip install 'googlenet-detection[onnx]' (or -e \".[onnx]\" in a clone)"


def context_boxes(boxes: np.ndarray, output_size: int = INPUT_SIZE,
                  context_pad: int = CONTEXT_PAD) -> np.ndarray:
    """`detector.regions.context_boxes` in numpy, bit for bit: boxes enlarged about their
    centres so that, warped to ``output_size``, they keep ``context_pad`` pixels of context.

    Args:
        boxes: ``ndarray[N, 4]`` ``(x1, y1, x2, y2)`` in image pixels, any real dtype.
    Returns:
        float32 ``ndarray[N, 4]`` in image pixels; may extend beyond the image.
    """
    check_warp_sizes(output_size, context_pad)
    boxes = np.asarray(boxes).astype(np.float32)
    scale = output_size / (output_size - 2 * context_pad)
    centres = (boxes[:, :2] + boxes[:, 2:]) / np.float32(2)
    # torch multiplies a float32 tensor by a Python float in float32: the factor is rounded first.
    half = (boxes[:, 2:] - boxes[:, :2]) * np.float32(scale / 2)
    return np.concatenate([centres - half, centres + half], axis=1)


class Warper:
    """`detector.regions.warp_regions` on ONNX Runtime (CPU, ``threads`` intra-op threads).

        warp = Warper(224, 16, threads=2)
        regions = warp(pixels, boxes)   # float32 [N, 3, 224, 224]

    Holds one session of `warp_model` (``output_size``), built once: calls cost only the warp.
    """

    def __init__(self, output_size: int = INPUT_SIZE, context_pad: int = CONTEXT_PAD, *,
                 threads: int):
        check_warp_sizes(output_size, context_pad)
        if threads < 1:
            raise DetectionError(f"threads is {threads}; it must be at least 1")
        self.output_size, self.context_pad, self.threads = output_size, context_pad, threads
        self.session = cpu_session(warp_model(output_size), threads)

    def __call__(self, pixels: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Crop every box (context-padded) out of ``pixels`` and resize it to ``S x S``.

        Args:
            pixels: float ``ndarray[3, H, W]`` normalised as by
                `proposals.networks.normalize_image` (mean colour = 0).
            boxes: ``ndarray[N, 4]`` ``(x1, y1, x2, y2)`` in pixels of the image, before context
                padding (added here); they may lie partly or wholly outside the image.
        Returns:
            float32 ``ndarray[N, 3, S, S]``; outside the image it is 0, the mean.
        """
        pixels, boxes = np.asarray(pixels), np.asarray(boxes)
        if pixels.ndim != 3 or pixels.shape[0] != 3:
            raise DetectionError(f"image has shape {tuple(pixels.shape)}; expected a normalised "
                                 "[3, H, W] array (see proposals.networks.normalize_image)")
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise DetectionError(f"boxes have shape {tuple(boxes.shape)}; "
                                 "expected [N, 4] (x1, y1, x2, y2)")
        padded = context_boxes(boxes, self.output_size, self.context_pad)
        size = self.output_size
        if padded.shape[0] == 0:
            return np.zeros((0, 3, size, size), np.float32)
        # As in warp_regions: one pixel of zeros around the image makes the half-pixel band just
        # outside it a linear ramp from the edge colour to the mean (0), not a step.
        _, height, width = pixels.shape
        b = WARP_BORDER
        canvas = np.zeros((1, 3, height + 2 * b, width + 2 * b), np.float32)
        canvas[0, :, b:b + height, b:b + width] = pixels
        feeds = dict(zip(INPUTS, (canvas, padded + np.float32(b),
                                  np.zeros(padded.shape[0], np.int64))))
        return self.session.run([OUTPUT], feeds)[0]


def warp_model(output_size: int) -> bytes:
    """The serialised ONNX ``ModelProto`` of the warp: one RoiAlign node.

    Inputs ``image`` float ``[1, 3, h, w]``, ``rois`` float ``[n, 4]`` (x1, y1, x2, y2 in pixels
    of ``image``), ``batch_indices`` int64 ``[n]`` (all 0); output ``regions`` float
    ``[n, 3, S, S]``. RoiAlign as ``roi_align(aligned=True, sampling_ratio=-1)``: ``half_pixel``
    coordinates, average pooling, ``ceil(roi side / S)`` samples per output pixel and axis.
    """
    node = _message(
        *(_string(_NODE_INPUT, name) for name in INPUTS),
        _string(_NODE_OUTPUT, OUTPUT),
        _string(_NODE_NAME, "roi_align"),
        _string(_NODE_OP_TYPE, "RoiAlign"),
        # Attributes in name order, as onnx.helper.make_node writes them.
        _bytes(_NODE_ATTRIBUTE, _string_attribute("coordinate_transformation_mode", "half_pixel")),
        _bytes(_NODE_ATTRIBUTE, _string_attribute("mode", "avg")),
        _bytes(_NODE_ATTRIBUTE, _int_attribute("output_height", output_size)),
        _bytes(_NODE_ATTRIBUTE, _int_attribute("output_width", output_size)),
        _bytes(_NODE_ATTRIBUTE, _int_attribute("sampling_ratio", 0)),  # 0: adaptive
        _bytes(_NODE_ATTRIBUTE, _float_attribute("spatial_scale", 1.0)),
    )
    graph = _message(
        _bytes(_GRAPH_NODE, node),
        _string(_GRAPH_NAME, "warp_regions"),
        _bytes(_GRAPH_INPUT, _tensor_value(INPUTS[0], _FLOAT, (1, 3, "h", "w"))),
        _bytes(_GRAPH_INPUT, _tensor_value(INPUTS[1], _FLOAT, ("n", 4))),
        _bytes(_GRAPH_INPUT, _tensor_value(INPUTS[2], _INT64, ("n",))),
        _bytes(_GRAPH_OUTPUT, _tensor_value(OUTPUT, _FLOAT, ("n", 3, output_size, output_size))),
    )
    opset = _message(_string(_OPSET_DOMAIN, ""), _varint_field(_OPSET_VERSION, OPSET))
    return _message(
        _varint_field(_MODEL_IR_VERSION, IR_VERSION),
        _string(_MODEL_PRODUCER_NAME, "detector.onnx_warp"),
        _bytes(_MODEL_GRAPH, graph),
        _bytes(_MODEL_OPSET_IMPORT, opset),
    )


def cpu_session(model: bytes, threads: int):
    """An ONNX Runtime session of ``model`` on the CPU provider, ``threads`` intra-op threads,
    one inter-op thread, every graph optimisation: the toolkit's one session setup (the warp's,
    and the classifiers' through `detector.runtime.ort_session`). ONNX Runtime's own errors
    for a model it cannot load pass through."""
    try:
        import onnxruntime as ort
    except ModuleNotFoundError:
        raise DetectionError(f"warping regions on ONNX Runtime needs onnxruntime, which the "
                             f"`onnx` extra installs: {ONNX_EXTRA}") from None
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: its warnings are not the user's to act on
    # No busy-waiting between runs: detection alternates two sessions (this warp and the
    # classifiers), each with its own threads, and threads spinning in one took the cores from
    # the other (7% of the whole rate on raccoon-52, BENCHMARKS.md).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


# --- A minimal protobuf writer, enough for this graph -------------------------------------------
# Field numbers of onnx/onnx.proto (ONNX 1.x; they never change once published). Messages:
# ModelProto, OperatorSetIdProto, GraphProto, NodeProto, AttributeProto, ValueInfoProto,
# TypeProto, TypeProto.Tensor, TensorShapeProto, TensorShapeProto.Dimension.
_MODEL_IR_VERSION, _MODEL_PRODUCER_NAME, _MODEL_GRAPH, _MODEL_OPSET_IMPORT = 1, 2, 7, 8
_OPSET_DOMAIN, _OPSET_VERSION = 1, 2
_GRAPH_NODE, _GRAPH_NAME, _GRAPH_INPUT, _GRAPH_OUTPUT = 1, 2, 11, 12
_NODE_INPUT, _NODE_OUTPUT, _NODE_NAME, _NODE_OP_TYPE, _NODE_ATTRIBUTE = 1, 2, 3, 4, 5
_ATTR_NAME, _ATTR_F, _ATTR_I, _ATTR_S, _ATTR_TYPE = 1, 2, 3, 4, 20
_VALUE_NAME, _VALUE_TYPE = 1, 2
_TYPE_TENSOR = 1
_TENSOR_ELEM_TYPE, _TENSOR_SHAPE = 1, 2
_SHAPE_DIM = 1
_DIM_VALUE, _DIM_PARAM = 1, 2
# Enum values: AttributeProto.AttributeType and TensorProto.DataType.
_ATTR_FLOAT, _ATTR_INT, _ATTR_STRING = 1, 2, 3
_FLOAT, _INT64 = 1, 7
# Wire types of the protobuf encoding.
_VARINT, _FIXED32, _LENGTH_DELIMITED = 0, 5, 2


def _varint(value: int) -> bytes:
    """Base-128 varint, low group first; non-negative values only (all this graph needs)."""
    if value < 0:
        raise ValueError(f"negative varint {value}")
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
    return _varint(field << 3 | wire_type)


def _varint_field(field: int, value: int) -> bytes:
    return _key(field, _VARINT) + _varint(value)


def _bytes(field: int, payload: bytes) -> bytes:
    """A length-delimited field: an embedded message, or a string's UTF-8 bytes."""
    return _key(field, _LENGTH_DELIMITED) + _varint(len(payload)) + payload


def _string(field: int, text: str) -> bytes:
    return _bytes(field, text.encode())


def _float32(field: int, value: float) -> bytes:
    return _key(field, _FIXED32) + struct.pack("<f", value)


def _message(*fields: bytes) -> bytes:
    """A message's fields, written in the order given (protobuf writes them by field number)."""
    return b"".join(fields)


def _int_attribute(name: str, value: int) -> bytes:
    return _message(_string(_ATTR_NAME, name), _varint_field(_ATTR_I, value),
                    _varint_field(_ATTR_TYPE, _ATTR_INT))


def _float_attribute(name: str, value: float) -> bytes:
    return _message(_string(_ATTR_NAME, name), _float32(_ATTR_F, value),
                    _varint_field(_ATTR_TYPE, _ATTR_FLOAT))


def _string_attribute(name: str, value: str) -> bytes:
    return _message(_string(_ATTR_NAME, name), _string(_ATTR_S, value),
                    _varint_field(_ATTR_TYPE, _ATTR_STRING))


def _tensor_value(name: str, elem_type: int, shape: tuple[int | str, ...]) -> bytes:
    """A ValueInfoProto of a tensor; ``shape``: ints are fixed sizes, strings symbolic ones."""
    dims = (_message(_varint_field(_DIM_VALUE, d) if isinstance(d, int)
                     else _string(_DIM_PARAM, d)) for d in shape)
    tensor = _message(_varint_field(_TENSOR_ELEM_TYPE, elem_type),
                      _bytes(_TENSOR_SHAPE, _message(*(_bytes(_SHAPE_DIM, d) for d in dims))))
    return _message(_string(_VALUE_NAME, name), _bytes(_VALUE_TYPE, _bytes(_TYPE_TENSOR, tensor)))
