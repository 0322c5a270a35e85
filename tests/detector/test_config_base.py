"""Configs that inherit (``_base_``): merged as mmdetection and detectron2 merge them, every
guard one error naming the files, and every shipped config exactly what it was before the
shipped configs were made to inherit."""
import textwrap

import pytest

from detector.training.config import load_train_config
from tests.test_shipped_configs import CONFIGS

# What each shipped config held, key by key, when every file still spelled out all its values
# (generated from the files before they used _base_; comments left out). A shipped config that
# inherits must build the same config as this: change both together, on purpose.
FROZEN = {
    "coco128_cpu.yaml": """
        data: {gt: ../shared/data/coco128/instances_train2017_128.json,
          images: ../shared/data/coco128/images/train2017,
          train_split: configs/splits/coco128_train.txt, val_split: configs/splits/coco128_val.txt,
          proposals: cache/coco128_ss_x2}
        model: {input_size: 64, context_pad: 5, weights: imagenet, box_regression: false}
        solver: {epochs: 8, lr: 0.01, momentum: 0.9, weight_decay: 0.0005, steps: [6], gamma: 0.1,
          images_per_batch: 4, regions_per_batch: 128, fg_fraction: 0.25, eval_every: 4}
        augment: {flip: true, photometric: true}
        seed: 0
        output: runs/coco128_cpu
        loader_workers: 1
        """,
    "coco128_multibox_cpu.yaml": """
        task: multibox
        data: {gt: ../shared/data/coco128/instances_train2017_128.json,
          images: ../shared/data/coco128/images/train2017,
          train_split: configs/splits/coco128_train.txt, val_split: configs/splits/coco128_val.txt}
        model: {num_priors: 800, input_size: 224, weights: imagenet, prior_samples: 20}
        loss: {alpha: 0.3, matching: bipartite}
        solver: {epochs: 60, lr: 0.01, momentum: 0.9, weight_decay: 0.0005, steps: [45],
          gamma: 0.1, images_per_batch: 8, eval_every: 10}
        augment: {crop: true, flip: true, photometric: true}
        validation: {top_n: 200, nms_iou: 0.7}
        seed: 0
        output: runs/coco128_multibox
        loader_workers: 1
        """,
    "raccoon_combined_cpu.yaml": """
        data: {gt: ../shared/data/raccoon/annotations, images: ../shared/data/raccoon/images,
          train_split: configs/splits/raccoon_train.txt, val_split: configs/splits/raccoon_val.txt,
          proposals: cache/raccoon_ss_x2_mb200}
        model: {input_size: 64, context_pad: 5, weights: imagenet, box_regression: false}
        solver: {epochs: 12, lr: 0.01, momentum: 0.9, weight_decay: 0.0005, steps: [9], gamma: 0.1,
          images_per_batch: 4, regions_per_batch: 128, fg_fraction: 0.25, eval_every: 4}
        augment: {flip: true, photometric: true}
        seed: 0
        output: runs/raccoon_combined
        loader_workers: 1
        proposals: {selective_search: {superpixel_scale: 2.0},
          multibox: runs/raccoon_multibox/epoch_060.pt, multibox_top: 200, multibox_nms: 0.7}
        """,
    "raccoon_cpu.yaml": """
        data: {gt: ../shared/data/raccoon/annotations, images: ../shared/data/raccoon/images,
          train_split: configs/splits/raccoon_train.txt, val_split: configs/splits/raccoon_val.txt,
          proposals: cache/raccoon_ss_x2}
        model: {input_size: 64, context_pad: 5, weights: imagenet, box_regression: false}
        solver: {epochs: 12, lr: 0.01, momentum: 0.9, weight_decay: 0.0005, steps: [9], gamma: 0.1,
          images_per_batch: 4, regions_per_batch: 128, fg_fraction: 0.25, eval_every: 4}
        augment: {flip: true, photometric: true}
        seed: 0
        output: runs/raccoon_cpu
        loader_workers: 1
        """,
    "raccoon_multibox_cpu.yaml": """
        task: multibox
        data: {gt: ../shared/data/raccoon/annotations, images: ../shared/data/raccoon/images,
          train_split: configs/splits/raccoon_train.txt, val_split: configs/splits/raccoon_val.txt}
        model: {num_priors: 800, input_size: 160, weights: imagenet, prior_samples: 20}
        loss: {alpha: 0.3, matching: bipartite}
        solver: {epochs: 60, lr: 0.01, momentum: 0.9, weight_decay: 0.0005, steps: [45],
          gamma: 0.1, images_per_batch: 8, eval_every: 10}
        augment: {crop: true, flip: true, photometric: true}
        validation: {top_n: 200, nms_iou: 0.7}
        seed: 0
        output: runs/raccoon_multibox
        loader_workers: 1
        """,
}


def test_every_shipped_config_is_frozen():
    assert sorted(FROZEN) == [path.name for path in CONFIGS]  # a new config: add it above


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_builds_what_it_built_before_it_inherited(path, tmp_path):
    frozen = tmp_path / path.name
    frozen.write_text(textwrap.dedent(FROZEN[path.name]))
    assert load_train_config(path) == load_train_config(frozen)
