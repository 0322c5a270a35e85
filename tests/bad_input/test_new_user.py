"""What a new user sees: progress bars that end at their total, a training run that says what it
does and what it wrote, every default in every --help, messages that fit the command printing
them, no empty output folder after a failed run, and a README that installs and tests as it
says."""
from __future__ import annotations

import argparse
import importlib
import json
import re
from pathlib import Path

import pytest

from _check import assert_one_line_error

REPO = Path(__file__).resolve().parents[2]
COMMANDS = ("evaluate", "propose", "train", "detect", "test", "convert_proposals")


# --- every --help shows every default, under the console script's name -------------------------

def option_helps(parser: argparse.ArgumentParser, help_text: str) -> dict[str, str]:
    """Each optional action's first flag -> its help as rendered in ``help_text`` (printed
    without wrapping), read from the text."""
    lines = help_text.splitlines()
    helps = {}
    for action in parser._actions:
        if not action.option_strings or isinstance(action, argparse._HelpAction):
            continue
        invocation = parser._get_formatter()._format_action_invocation(action)
        at = next(i for i, line in enumerate(lines) if line.strip().startswith(invocation))
        rest = lines[at].strip()[len(invocation):].strip() or lines[at + 1].strip()
        helps[action.option_strings[0]] = rest
    return helps


def shown_default(action: argparse.Action) -> str | None:
    """What the help must show of ``action``'s default ("" where it must only say what the
    default is, None where there is nothing to show: no default, a plain switch, a list)."""
    if action.default in (None, [], argparse.SUPPRESS, False):
        # An --x/--no-x flag left unset means something: the help must say what.
        return "" if isinstance(action, argparse.BooleanOptionalAction) else None
    return str(action.default)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_help_shows_every_default_under_the_script_name(command, monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "1000")  # one line per flag: nothing wraps inside a value
    module = importlib.import_module(f"detector.cli.{command}")
    parser = module.build_parser()
    assert parser.prog == f"gdet-{command.replace('_', '-')}"
    with pytest.raises(SystemExit) as done:
        module.main(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: gdet-{command.replace('_', '-')} ")
    helps = option_helps(parser, text)
    missing = {}
    for action in parser._actions:
        want = shown_default(action)
        if want is None or not action.option_strings:
            continue
        shown = helps[action.option_strings[0]]
        if "default" not in shown.lower() or want not in shown:
            missing[action.option_strings[0]] = (want, shown)
    assert not missing, missing


# --- progress bars end at their total ------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A 2-class classifier (red, blue; input 32) with random weights: what the bars count
    does not depend on what it finds."""
    import torch

    from detector.classifier import build_classifier
    from proposals.checkpoint import ModelSpec, save_checkpoint

    path = tmp_path_factory.mktemp("new_user") / "model.pt"
    torch.manual_seed(0)
    save_checkpoint(path, classes=["red", "blue"], spec=ModelSpec(2, 32, 2),
                    state_dict=build_classifier(2, weights=None, input_size=32).state_dict(),
                    proposals={"method": "selective_search", "params": {}})
    return path


def final_bar(stderr: str, label: str) -> str:
    """The last state of the progress bar ``label`` drawn on ``stderr``; it must be closed (a
    newline after it)."""
    states = re.findall(rf"{label}: [^\r\n]*[\r\n]", stderr)
    assert states, stderr
    assert states[-1].endswith("\n"), f"the bar was left open: {states[-1]!r}"
    return states[-1]


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("count", [1, 3])
def test_detect_and_test_bars_end_at_their_total(count, tiny, checkpoint, tmp_path, capsys):
    from detector.cli.detect import main as detect
    from detector.cli.test import main as test

    images = [str(tiny / f"im{i}.png") for i in range(count)]
    assert detect([*images, "--checkpoint", str(checkpoint), "--proposals", str(tiny / "cache"),
                   "--out", str(tmp_path / "dets")]) == 0
    assert f"{count}/{count}" in final_bar(capsys.readouterr().err, "detect")
    (tmp_path / "split.txt").write_text("".join(f"im{i}\n" for i in range(count)))
    assert test(["--gt", str(tiny), "--split", str(tmp_path / "split.txt"), "--checkpoint",
                 str(checkpoint), "--proposals", str(tiny / "cache"),
                 "--out", str(tmp_path / "test")]) == 0
    assert f"{count}/{count}" in final_bar(capsys.readouterr().err, "test")


# --- training says what it does, and what it wrote ----------------------------------------------

@pytest.mark.usefixtures("one_torch_thread")
def test_training_begins_with_a_summary_and_ends_naming_the_model(tiny, tmp_path, capsys):
    import shutil

    from _tiny import train_tiny
    from proposals.cache import ProposalCache

    cache = tmp_path / "cache"  # tiny's cache with im3 recorded as failed: one image skipped
    shutil.copytree(tiny / "cache", cache)
    ProposalCache.open(cache).box_path("im3").unlink()
    ProposalCache.open(cache).record_failure("im3", str(tiny / "im3.png"), "cannot decode")
    (tmp_path / "val.txt").write_text("im2\n")
    out = tmp_path / "run"
    assert train_tiny(tiny, out, "--set", "solver.epochs=1", "--set", f"data.proposals={cache}",
                      "--set", f"data.val_split={tmp_path / 'val.txt'}",
                      "--set", "solver.eval_every=1") == 0
    printed = capsys.readouterr().out
    start, _, end = printed.partition("epoch 1:")
    summary = " ".join(start.split())  # one paragraph, wrapped
    for part in (f"on {tiny}", "3 images to train on", "1 skipped", "1 image to validate on",
                 str(tmp_path / "val.txt"), "on cpu in fp32", "1 epoch", f"to {out}/"):
        assert part in summary, (part, summary)
    assert f"{out / 'last.pt'}" in end and "VOC all-point AP@0.5" in end, end


@pytest.mark.usefixtures("no_downloads")
def test_offline_training_names_the_config_key_not_the_detect_flag(tiny, tmp_path, capsys):
    from detector.cli.train import main as train

    line = assert_one_line_error(capsys, train, [
        "--config", tiny / "tiny.yaml", "--set", "model.weights=imagenet",
        "--set", f"output={tmp_path / 'run'}", "--device", "cpu"],
        "cannot download", "model.weights=FILE", "model.weights=null")
    assert "--imagenet-weights" not in line and "detection" not in line
    assert not (tmp_path / "run").exists()  # the failed run left no empty folder
    line = assert_one_line_error(capsys, train, [
        "--config", tiny / "tiny.yaml", "--set", f"model.weights={tmp_path / 'w.pth'}",
        "--set", f"output={tmp_path / 'run'}", "--device", "cpu"],
        "w.pth: weights file not found", "model.weights")
    assert "--imagenet-weights" not in line


@pytest.mark.usefixtures("one_torch_thread")
def test_a_resumed_run_does_not_read_its_initial_weights_again(tiny, tmp_path):
    # Resuming offline must work: the weights come from the checkpoint, and model.weights is
    # not a key a resumed run may change, so an error asking to change it would be a dead end.
    import torch
    from torchvision.models import googlenet

    from _tiny import train_tiny
    from detector.cli.train import main as train

    weights = tmp_path / "googlenet.pth"
    torch.save(googlenet(weights=None, aux_logits=False, init_weights=True).state_dict(), weights)
    out = tmp_path / "run"
    assert train_tiny(tiny, out, "--set", "solver.epochs=1",
                      "--set", f"model.weights={weights}") == 0
    weights.unlink()  # as the ImageNet download is, offline
    assert train(["--resume", str(out / "last.pt"), "--set", "solver.epochs=2",
                  "--device", "cpu"]) == 0
    assert (out / "epoch_002.pt").exists()


# --- offline messages fit the command that prints them ------------------------------------------

@pytest.mark.usefixtures("no_downloads")
def test_offline_detect_names_its_own_flags(tiny, tmp_path, capsys):
    from detector.cli.detect import main as detect

    image, out = str(tiny / "im0.png"), str(tmp_path / "dets")
    for weights in ([], ["--imagenet-weights", "imagenet"]):
        line = assert_one_line_error(capsys, detect, [image, *weights, "--out", out],
                                     "cannot download", "--imagenet-weights FILE", "--checkpoint")
        assert "model.weights" not in line and "training" not in line and "train " not in line
    missing = tmp_path / "w.pth"
    line = assert_one_line_error(capsys, detect, [image, "--imagenet-weights", missing,
                                                  "--out", out],
                                 f"{missing}: weights file not found", "--imagenet-weights")
    assert "no weights" not in line and "model.weights" not in line
    assert not (tmp_path / "dets").exists()  # nor an empty output folder


# --- a failed run leaves no empty output folder --------------------------------------------------

def test_a_failed_command_removes_the_empty_folders_it_made(tiny, tmp_path, capsys):
    from detector.cli.evaluate import main as evaluate

    bad = tmp_path / "dets.json"
    bad.write_text('[{"image_id": "im0"}]')  # not a detection: refused after the output checks
    json_out, plot_out = tmp_path / "new" / "deeper" / "e.json", tmp_path / "kept" / "pr.png"
    plot_out.parent.mkdir()  # there before the run: stays
    assert_one_line_error(capsys, evaluate, ["--gt", tiny, "--detections", bad,
                                             "--json", json_out, "--plot", plot_out], "dets.json")
    assert not (tmp_path / "new").exists() and plot_out.parent.is_dir()
    # A folder the run made that holds something is kept.
    from eval.outputs import check_output_dir, created_folders_removed_on_failure

    with pytest.raises(KeyboardInterrupt), created_folders_removed_on_failure():
        (check_output_dir(tmp_path / "a" / "b", "--out") / "result.txt").write_text("done")
        check_output_dir(tmp_path / "c", "--out")
        raise KeyboardInterrupt
    assert (tmp_path / "a" / "b" / "result.txt").exists() and not (tmp_path / "c").exists()


# --- a folder of XMLs without --images names --images -------------------------------------------

@pytest.mark.parametrize("command", ["evaluate", "test", "propose"])
def test_xml_folder_without_images_names_the_images_flag(command, tiny, tmp_path, capsys):
    import shutil

    xmls = tmp_path / "annotations"
    xmls.mkdir()
    for xml in tiny.glob("*.xml"):
        shutil.copy(xml, xmls)
    (tmp_path / "d.json").write_text("[]")
    (tmp_path / "m.pt").write_bytes(b"not read: the flags are refused first")
    main = importlib.import_module(f"detector.cli.{command}").main
    argv = {"evaluate": ["--detections", tmp_path / "d.json"],
            "test": ["--checkpoint", tmp_path / "m.pt", "--out", tmp_path / "out"],
            "propose": ["--out", tmp_path / "cache"]}[command]
    assert_one_line_error(capsys, main, ["--gt", xmls, *argv], str(xmls), "--images")
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()
    if command == "evaluate":  # with the images beside them, the same folder is read
        for image in tiny.glob("*.png"):
            shutil.copy(image, xmls)
        assert main(["--gt", str(xmls), "--detections", str(tmp_path / "d.json")]) == 0


# --- the README installs and tests as it says ---------------------------------------------------

def readme_blocks(language: str) -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def test_readme_installs_without_cuda_wheels_and_prints_skip_reasons():
    blocks = readme_blocks("bash")
    cpu = [b for b in blocks if "download.pytorch.org/whl/cpu" in b]
    assert cpu, "no CPU-only install in README"
    assert cpu[0].index("--index-url") < cpu[0].index('pip install -e ".[detect]"')
    # The Tests section's command is the one .ci/run runs, and it prints skip reasons.
    tests = [b for b in blocks if "pytest" in b]
    command = re.search(r"python -m pytest[^\n&]*", tests[0]).group().strip()
    assert "-rs" in command.split()
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()
          if line.strip().startswith("python -m pytest")]
    assert ci == [command]


def test_readme_examples_never_shadow_the_builtin_eval():
    for block in readme_blocks("python"):
        assert not re.search(r"^\s*import eval\b", block, flags=re.M), block
        assert not re.search(r"\beval\.\w+\(", block), block
