"""Selective search presets (proposals.config.PRESETS): each preset's settings as documented,
googlenet = the defaults (so caches made before still open), and the three ways to ask for one:
`preset_config`, the propose command's --preset and a training config's
``proposals.selective_search.preset``; values given beside a preset replace the preset's."""
from dataclasses import asdict

import numpy as np
import pytest
from PIL import Image

from detector.cli.propose import build_parser, check_arguments, main, proposal_config
from detector.training.config import config_yaml, load_train_config
from eval.errors import DetectionError
from proposals.cache import ProposalCache
from proposals.config import (DEFAULT_PRESET, PRESETS, SelectiveSearchConfig, preset_config,
                              preset_settings)

NAMES = "rcnn, googlenet, coco"


def test_each_preset_holds_its_documented_settings():
    assert list(PRESETS) == ["rcnn", "googlenet", "coco"]
    assert PRESETS["rcnn"].settings == {"mode": "fast", "superpixel_scale": 1.0, "max_side": 500,
                                        "min_box_side": 20.0, "max_boxes": None}
    assert PRESETS["googlenet"].settings == {"mode": "fast", "superpixel_scale": 2.0,
                                             "max_side": 500, "min_box_side": 20.0,
                                             "max_boxes": None}
    assert PRESETS["coco"].settings == {"mode": "coco", "superpixel_scale": 1.0, "max_side": 500,
                                        "min_box_side": 4.0, "max_boxes": None}
    for name, preset in PRESETS.items():
        # Every field but the seed, so that a preset alone decides the boxes.
        assert set(preset.settings) == set(asdict(SelectiveSearchConfig())) - {"seed"}, name
        assert preset_config(name).seed == 0 and preset.about


def test_googlenet_is_the_default_and_its_cache_params_are_unchanged():
    assert DEFAULT_PRESET == "googlenet"
    assert preset_config("googlenet") == SelectiveSearchConfig()
    # A cache's manifest stores these params: a cache made before the presets still opens.
    assert asdict(SelectiveSearchConfig()) == {"mode": "fast", "superpixel_scale": 2.0,
                                               "max_side": 500, "min_box_side": 20.0,
                                               "max_boxes": None, "seed": 0}


def test_values_given_replace_the_presets():
    config = preset_config("coco", max_boxes=300, seed=3)
    assert (config.max_boxes, config.seed) == (300, 3)
    assert config.superpixel_scale == 1.0 and config.min_box_side == 4.0
    settings = preset_settings("rcnn")
    settings["max_side"] = 1  # a copy: the table itself stays as it is
    assert PRESETS["rcnn"].settings["max_side"] == 500


@pytest.mark.parametrize("name", ["voc", "", None, ["coco"], "COCO"])
def test_an_unknown_preset_is_one_error_listing_the_names(name):
    with pytest.raises(DetectionError, match=f"unknown selective search preset .*use one of "
                                             f"{NAMES}$"):
        preset_config(name)


# --- the propose command ----------------------------------------------------------------------

def flags_config(argv: list[str]) -> SelectiveSearchConfig:
    """The selective search config that the propose command's flags ask for (nothing run)."""
    args = build_parser().parse_args(["--images", "imgs", "--out", "c", *argv])
    check_arguments(args)
    return proposal_config(args).selective_search


def test_cli_preset_alone_and_with_flags():
    assert flags_config([]) == SelectiveSearchConfig()
    for name in PRESETS:
        assert flags_config(["--preset", name]) == preset_config(name)
    # A flag given replaces that one value; 0 still means "no limit".
    assert flags_config(["--preset", "coco", "--min-box-side", "4", "--max-boxes", "1000"]) == \
        preset_config("coco", min_box_side=4.0, max_boxes=1000)
    assert flags_config(["--preset", "rcnn", "--max-side", "0"]) == \
        preset_config("rcnn", max_side=None)
    assert flags_config(["--superpixel-scale", "1"]) == preset_config("googlenet",
                                                                      superpixel_scale=1.0)


def test_cli_unknown_preset_lists_the_names(capsys):
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args(["--preset", "voc"])
    assert done.value.code == 2
    assert "invalid choice: 'voc' (choose from 'rcnn', 'googlenet', 'coco')" in \
        capsys.readouterr().err


def test_cli_help_lists_every_preset_and_its_flags(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for name, preset in PRESETS.items():
        assert f"  {name}: {preset.about}" in text
    assert "--mode fast --superpixel-scale 1 --max-side 500 --min-box-side 20 --max-boxes 0" \
        in text  # rcnn's, as flags


def test_cli_preset_with_config_is_refused():
    args = build_parser().parse_args(["--config", "train.yaml", "--preset", "coco"])
    with pytest.raises(DetectionError, match="--preset with --config train.yaml: the config "
                                             "decides"):
        check_arguments(args)


def test_cli_preset_fills_the_cache_with_its_params(tmp_path):
    image = np.full((64, 80, 3), 100, np.uint8)
    image[10:40, 20:60] = (200, 30, 30)
    (tmp_path / "imgs").mkdir()
    Image.fromarray(image).save(tmp_path / "imgs" / "one.png")
    argv = ["--images", str(tmp_path / "imgs"), "--out", str(tmp_path / "c"), "--preset", "rcnn",
            "--max-boxes", "50"]
    assert main(argv) == 0
    params = ProposalCache.open(tmp_path / "c").params
    assert params == asdict(preset_config("rcnn", max_boxes=50))


# --- training configs -------------------------------------------------------------------------

def write_config(tmp_path, proposals: str):
    path = tmp_path / "train.yaml"
    path.write_text("data:\n  gt: voc\n  proposals: cache/ss\nproposals:\n" + proposals)
    return path


def test_config_preset_and_keys_beside_it(tmp_path):
    path = write_config(tmp_path, "  selective_search:\n    preset: coco\n    max_boxes: 500\n")
    config = load_train_config(path)
    assert config.proposals.selective_search == preset_config("coco", max_boxes=500)
    # --set may name a preset too; keys the file writes still win over it.
    config = load_train_config(path, ["proposals.selective_search.preset=rcnn"])
    assert config.proposals.selective_search == preset_config("rcnn", max_boxes=500)
    # The run's stored config holds the values, not the name: it means the same later on.
    assert "preset" not in config_yaml(config)
    assert "superpixel_scale: 1.0" in config_yaml(config)


def test_config_without_preset_is_unchanged(tmp_path):
    path = write_config(tmp_path, "  selective_search:\n    superpixel_scale: 1.0\n")
    assert load_train_config(path).proposals.selective_search == \
        SelectiveSearchConfig(superpixel_scale=1.0)


def test_config_unknown_preset_names_the_file_and_key(tmp_path):
    path = write_config(tmp_path, "  selective_search:\n    preset: voc\n")
    with pytest.raises(DetectionError) as error:
        load_train_config(path)
    assert str(error.value) == (f"{path}: proposals.selective_search.preset: unknown selective "
                                f"search preset 'voc'; use one of {NAMES}")
    with pytest.raises(DetectionError, match=r"^--set proposals.selective_search.preset=x "):
        load_train_config(write_config(tmp_path, "  multibox_top: 100\n"),
                          ["proposals.selective_search.preset=x"])


def test_config_preset_directly_under_proposals_is_refused(tmp_path):
    path = write_config(tmp_path, "  preset: coco\n")
    with pytest.raises(DetectionError, match="write it as proposals.selective_search.preset"):
        load_train_config(path)
