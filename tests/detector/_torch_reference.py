"""The torch box decoding this project used before detection's post-processing moved to numpy,
kept as the reference the numpy code is held to (test_box_coder.py, test_postprocess.py)."""
import torch

from detector.box_coder import SCALE_CLAMP


def torch_decode(deltas, proposals, stds=None, scale_clamp=SCALE_CLAMP, exp=torch.exp):
    """detector.box_coder.decode as it was in torch, verbatim but for `exp`, taken as an
    argument (see test_decode_bit_identical_to_torch_version)."""
    def as_float(t):
        return t if t.dtype == torch.float64 else t.float()

    stds = torch.tensor(stds or (1.0, 1.0, 1.0, 1.0), dtype=as_float(deltas).dtype)
    deltas = as_float(deltas) * stds
    proposals = as_float(proposals)
    ctr = (proposals[..., :2] + proposals[..., 2:]) / 2
    size = proposals[..., 2:] - proposals[..., :2]
    if deltas.ndim == 3:
        ctr, size = ctr[:, None], size[:, None]
    new_ctr = ctr + deltas[..., :2] * size
    new_size = size * exp(deltas[..., 2:].clamp(max=scale_clamp))
    return torch.cat([new_ctr - new_size / 2, new_ctr + new_size / 2], dim=-1)


def rounded_exp(t: torch.Tensor) -> torch.Tensor:
    """exp in float64, rounded to the input's dtype: the correctly rounded float32 exp."""
    return torch.exp(t.double()).to(t.dtype)
