"""Configs that inherit (``_base_``): merged as mmdetection and detectron2 merge them, every
guard one error naming the files, and every shipped config exactly what it was before the
shipped configs were made to inherit."""
import os
import textwrap
from pathlib import Path

import pytest

from detector.training.config import absolute_paths, load_train_config
from eval.config import read_yaml
from eval.config_base import MAX_BASE_DEPTH, MAX_BASE_FILES
from eval.errors import DetectionError

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))

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


@pytest.mark.parametrize("name, base", [("raccoon_combined_cpu.yaml", "raccoon_cpu.yaml"),
                                        ("coco128_cpu.yaml", "raccoon_cpu.yaml"),
                                        ("coco128_multibox_cpu.yaml",
                                         "raccoon_multibox_cpu.yaml")])
def test_shipped_configs_that_repeated_another_inherit_it(name, base):
    assert read_yaml(REPO / "configs" / name)["_base_"] == base  # the frozen test means something


def write(folder, name, text):
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


BASE = """
    data: {gt: base_gt, images: base_images, proposals: cache/base}
    model: {input_size: 64, context_pad: 5}
    solver: {lr: 0.1, steps: [3, 6], images_per_batch: 4, regions_per_batch: 64}
    output: runs/base
    """


def test_child_values_win_mappings_merge_lists_and_values_replace_whole(tmp_path):
    write(tmp_path, "base.yaml", BASE)
    child = write(tmp_path, "child.yaml", """
        _base_: base.yaml
        data: {proposals: cache/child}
        solver: {steps: [9]}
        output: runs/child
        """)
    config = load_train_config(child)
    assert (config.data.gt, config.data.images, config.data.proposals) == (
        "base_gt", "base_images", "cache/child")
    assert (config.solver.lr, config.solver.steps, config.solver.images_per_batch) == (
        0.1, (9,), 4)  # [3, 6] replaced by [9], not merged item by item
    assert (config.model.input_size, config.output) == (64, "runs/child")


def test_a_list_of_bases_merges_in_order_then_the_file(tmp_path):
    write(tmp_path, "a.yaml", BASE)
    write(tmp_path, "b.yaml", "solver: {lr: 0.2, epochs: 5}\noutput: runs/b\n")
    child = write(tmp_path, "child.yaml", "_base_: [a.yaml, b.yaml]\nsolver: {epochs: 7}\n")
    config = load_train_config(child)
    assert (config.solver.lr, config.solver.epochs, config.solver.steps) == (0.2, 7, (3, 6))
    assert (config.output, config.data.gt) == ("runs/b", "base_gt")


def test_delete_replaces_the_base_mapping_instead_of_merging(tmp_path):
    write(tmp_path, "base.yaml", BASE)
    child = write(tmp_path, "child.yaml", """
        _base_: base.yaml
        model: {_delete_: true, input_size: 96}
        data: {_delete_: false, gt: child_gt}
        """)
    config = load_train_config(child)
    assert (config.model.input_size, config.model.context_pad) == (96, 16)  # 16: the default
    assert (config.data.gt, config.data.images) == ("child_gt", "base_images")
    write(tmp_path, "bad.yaml", "_base_: base.yaml\nmodel: {_delete_: 1}\n")
    with pytest.raises(DetectionError, match=r"bad.yaml: model._delete_ must be true or false"):
        load_train_config(tmp_path / "bad.yaml")


def test_a_base_is_found_relative_to_its_file_from_any_working_directory(tmp_path, monkeypatch):
    write(tmp_path, "shared/base.yaml", BASE)
    child = write(tmp_path, "configs/child.yaml", "_base_: ../shared/base.yaml\n")
    grandchild = write(tmp_path, "configs/deeper/grandchild.yaml",
                       "_base_: [../child.yaml]\noutput: runs/g\n")
    monkeypatch.chdir(tmp_path / "shared")
    assert load_train_config(os.path.relpath(grandchild)).data.gt == "base_gt"
    assert load_train_config(child).output == "runs/base"


def test_data_paths_a_base_writes_stay_relative_to_the_working_directory(tmp_path, monkeypatch):
    """As in a file that inherits nothing: a base in another folder changes no path's meaning."""
    write(tmp_path, "elsewhere/base.yaml", "data: {gt: data/gt, proposals: cache/p}\n")
    child = write(tmp_path, "configs/child.yaml", "_base_: ../elsewhere/base.yaml\n")
    alone = write(tmp_path, "configs/alone.yaml", "data: {gt: data/gt, proposals: cache/p}\n")
    monkeypatch.chdir(tmp_path / "configs")
    inherited = load_train_config(child)
    assert inherited.data.gt == "data/gt"
    assert absolute_paths(inherited) == absolute_paths(load_train_config(alone))
    assert absolute_paths(inherited).data.gt == str(tmp_path / "configs" / "data" / "gt")


def test_set_overrides_apply_after_the_merge(tmp_path):
    write(tmp_path, "base.yaml", BASE)
    child = write(tmp_path, "child.yaml", "_base_: base.yaml\nsolver: {lr: 0.2}\n")
    config = load_train_config(child, ["solver.lr=0.3", "solver.steps=[2]", "data.gt=set_gt"])
    assert (config.solver.lr, config.solver.steps, config.data.gt) == (0.3, (2,), "set_gt")
    assert config.data.images == "base_images"


@pytest.mark.parametrize("base_text, child_text, overrides, names", [
    ("solver: {lrr: 1}\n", "", [], "base.yaml: unknown key solver.lrr"),
    ("solver: {lr: -1}\n", "", [], "base.yaml: solver.lr must be > 0"),
    ("model: {input_size: 64, context_pad: 40}\n", "", [], "base.yaml: model.context_pad must be"),
    ("solver: {lr: -1}\n", "solver: {lr: 0.5, momentum: 2}\n", [],
     "child.yaml: solver.momentum must be"),
    ("solver: {lr: -1}\n", "", ["solver.lr=-2"], r"--set solver.lr=-2 \(on .*child.yaml\)"),
    ("task: multibox\ndata: {proposals: x}\n", "", [], "base.yaml: unknown key data.proposals"),
])
def test_an_error_about_a_key_names_the_file_it_came_from(tmp_path, base_text, child_text,
                                                           overrides, names):
    write(tmp_path, "base.yaml", base_text)
    child = write(tmp_path, "child.yaml", "_base_: base.yaml\n" + child_text)
    with pytest.raises(DetectionError, match=names):
        load_train_config(child, overrides)


def test_a_key_a_grandparent_wrote_names_the_grandparent(tmp_path):
    write(tmp_path, "a/grand.yaml", "augment: {flip: 1}\n")
    write(tmp_path, "b/parent.yaml", "_base_: ../a/grand.yaml\naugment: {photometric: true}\n")
    child = write(tmp_path, "child.yaml", "_base_: b/parent.yaml\n")
    with pytest.raises(DetectionError, match=r"a/grand.yaml: augment.flip must be bool"):
        load_train_config(child)


def test_a_cycle_is_one_error_naming_the_chain(tmp_path):
    write(tmp_path, "a.yaml", "_base_: b.yaml\n")
    write(tmp_path, "b.yaml", "_base_: [c.yaml, a.yaml]\n")
    write(tmp_path, "c.yaml", "seed: 1\n")
    with pytest.raises(DetectionError, match=r"b.yaml: _base_ makes a cycle \(.*a.yaml -> "
                                             r".*b.yaml -> .*a.yaml\)"):
        load_train_config(tmp_path / "a.yaml")
    write(tmp_path, "self.yaml", "_base_: ./self.yaml\n")
    with pytest.raises(DetectionError, match="cycle"):
        load_train_config(tmp_path / "self.yaml")


def test_a_base_shared_by_two_bases_is_no_cycle(tmp_path):
    write(tmp_path, "d.yaml", BASE)
    write(tmp_path, "b.yaml", "_base_: d.yaml\nseed: 2\n")
    write(tmp_path, "c.yaml", "_base_: d.yaml\noutput: runs/c\n")
    config = load_train_config(write(tmp_path, "a.yaml", "_base_: [b.yaml, c.yaml]\n"))
    assert (config.seed, config.output, config.data.gt) == (2, "runs/c", "base_gt")


def test_a_missing_base_names_the_file_that_asked_and_where_it_looked(tmp_path):
    child = write(tmp_path, "configs/child.yaml", "_base_: ../nowhere/base.yaml\n")
    with pytest.raises(DetectionError) as info:
        load_train_config(child)
    message = str(info.value)
    assert message.startswith(str(tmp_path / "configs" / "../nowhere/base.yaml"))
    assert "not found" in message and f"in {child}" in message


def test_chains_and_file_counts_are_bounded(tmp_path):
    for i in range(MAX_BASE_DEPTH + 1):
        write(tmp_path, f"f{i}.yaml", f"_base_: f{i + 1}.yaml\n")
    write(tmp_path, f"f{MAX_BASE_DEPTH + 1}.yaml", "seed: 1\n")
    with pytest.raises(DetectionError, match=f"more than {MAX_BASE_DEPTH} files"):
        load_train_config(tmp_path / "f0.yaml")
    levels = 6  # each file names the next twice: 2**6 files read, past the bound
    assert 2 ** levels > MAX_BASE_FILES
    for i in range(levels):
        write(tmp_path, f"g{i}.yaml", f"_base_: [g{i + 1}.yaml, g{i + 1}.yaml]\n")
    write(tmp_path, f"g{levels}.yaml", "seed: 1\n")
    with pytest.raises(DetectionError, match=f"g0.yaml: its _base_ files read more than "
                                             f"{MAX_BASE_FILES} files"):
        load_train_config(tmp_path / "g0.yaml")


@pytest.mark.parametrize("base_text, message", [
    ("seed: 1\nseed: 2\n", "base.yaml: lines 1 and 2: duplicate key 'seed'"),
    ("seed: !!python/object:os.system 1\n", "base.yaml: line 1: the tag"),
    ("- a\n", "base.yaml: a config must be a mapping"),
    ("#" * (1 << 20) + "\n", "base.yaml.*1 MiB|base.yaml.*larger"),
])
def test_each_base_is_read_by_the_config_reader_with_its_limits(tmp_path, base_text, message):
    (tmp_path / "base.yaml").write_text(base_text)
    child = write(tmp_path, "child.yaml", "_base_: base.yaml\n")
    with pytest.raises(DetectionError, match=message):
        load_train_config(child)


@pytest.mark.parametrize("text, message", [
    ("_BASE_: base.yaml\n", "write _base_ .lower case"),
    ("_base_: 3\n", "_base_ must be a config file's path or a list of them"),
    ("_base_: [base.yaml, '']\n", "_base_ must be"),
    ("data:\n  _base_: base.yaml\n", "unknown key data._base_"),
])
def test_a_malformed_base_key_is_one_error(tmp_path, text, message):
    write(tmp_path, "base.yaml", BASE)
    with pytest.raises(DetectionError, match=message):
        load_train_config(write(tmp_path, "child.yaml", text))
