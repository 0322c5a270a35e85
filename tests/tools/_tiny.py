"""A tiny generated VOC dataset for the tool tests: 4 images, a red and a blue rectangle each.
tests/conftest.py's session fixture ``tiny`` builds it once, with one training run."""
from pathlib import Path

import numpy as np
from PIL import Image

from detector.cli.propose import main as propose
from detector.cli.train import main as train

CLASSES = ("red", "blue")


def save_voc_image(root: Path, stem: str, image: np.ndarray, objects: dict) -> None:
    """``root/stem.png`` and its VOC XML; ``objects`` maps class names to ``(x1, y1, x2, y2)``
    pixel boxes (written 1-based inclusive, as VOC stores them)."""
    Image.fromarray(image).save(root / f"{stem}.png")
    height, width = image.shape[:2]
    xml = "".join(f"<object><name>{name}</name><bndbox><xmin>{x1 + 1}</xmin><ymin>{y1 + 1}</ymin>"
                  f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
                  for name, (x1, y1, x2, y2) in objects.items())
    (root / f"{stem}.xml").write_text(
        f"<annotation><filename>{stem}.png</filename><size><width>{width}</width>"
        f"<height>{height}</height></size>{xml}</annotation>")


def make_tiny(root: Path) -> Path:
    """Images, VOC XMLs, their selective-search cache (``cache/``) and ``tiny.yaml``."""
    rng = np.random.default_rng(0)
    for i in range(4):
        image = rng.integers(100, 130, size=(72, 96, 3), dtype=np.uint8)
        r, b = (4 + 3 * i, 6, 34 + 3 * i, 40), (50, 30 + i, 90, 66)
        image[r[1]:r[3], r[0]:r[2]] = (210, 40, 40)
        image[b[1]:b[3], b[0]:b[2]] = (30, 40, 200)
        save_voc_image(root, f"im{i}", image, dict(zip(CLASSES, (r, b))))
    assert propose(["--gt", str(root), "--out", str(root / "cache"), "--min-box-side", "4"]) == 0
    (root / "tiny.yaml").write_text(f"""
data:
  gt: {root}
  proposals: {root / 'cache'}
model:
  input_size: 32
  context_pad: 2
  weights: null
solver:
  epochs: 2
  lr: 0.01
  steps: [1]
  images_per_batch: 2
  regions_per_batch: 16
loader_workers: 0
""")
    return root


def train_tiny(root: Path, out: Path, *extra: str) -> int:
    """The train command on ``root``'s tiny.yaml (2 epochs unless ``extra`` says otherwise),
    writing to ``out``, on the CPU; its exit status."""
    return train(["--config", str(root / "tiny.yaml"), "--set", f"output={out}", "--device", "cpu",
                  *extra])
