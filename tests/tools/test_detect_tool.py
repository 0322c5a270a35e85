"""The detect command (detector.cli.detect): printed detections, annotated images, results
JSON; the default ImageNet model; every user error is one line on stderr and exit status 2."""
import json

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torchvision.models import googlenet

from proposals.checkpoint import ModelSpec, save_checkpoint
from detector.classifier import build_classifier
from detector.ensemble import InferencePath, default_path
from eval.detections import load_results
from proposals.cache import ProposalCache
from detector.api import inference_path_for
from detector.cli.common import inference_options
from detector.cli.detect import build_parser, main

CLASSES = ["red", "blue"]
# Few, small proposals: selective search capped at 6 boxes per image.
PROPOSALS = {"method": "selective_search", "params": {"max_boxes": 6, "min_box_side": 8}}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def write_image(path, size=(48, 64), shift=0):
    """A red and a blue rectangle on a noisy grey background, RGB uint8."""
    image = np.random.default_rng(shift).integers(90, 110, size + (3,), dtype=np.uint8)
    image[5 + shift:25 + shift, 5:30] = (200, 30, 30)
    image[20:45, 35:60] = (20, 40, 220)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, quality=95)
    return path


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """a.pt and b.pt: two 2-class members at input 64; cats.pt: a.pt's weights, other classes;
    three.pt: claims 3 classes but holds 2-class weights."""
    folder = tmp_path_factory.mktemp("ckpt")
    for name, seed in (("a", 1), ("b", 2)):
        torch.manual_seed(seed)
        model = build_classifier(2, weights=None, input_size=64)
        torch.nn.init.normal_(model.cls_score.bias, std=1.0)  # distinct, non-uniform scores
        save_checkpoint(folder / f"{name}.pt", classes=CLASSES, spec=ModelSpec(2, 64, 4),
                        state_dict=model.state_dict(), proposals=PROPOSALS)
    state = torch.load(folder / "a.pt", weights_only=True)["state_dict"]
    save_checkpoint(folder / "cats.pt", classes=["cat", "dog"], spec=ModelSpec(2, 64, 4),
                    state_dict=state, proposals=PROPOSALS)
    save_checkpoint(folder / "three.pt", classes=["a", "b", "c"], spec=ModelSpec(3, 64, 4),
                    state_dict=state, proposals=PROPOSALS)
    return folder


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """single.png, and a folder with a.png and sub/b.jpg."""
    root = tmp_path_factory.mktemp("images")
    write_image(root / "single.png", shift=0)
    write_image(root / "folder" / "a.png", shift=3)
    write_image(root / "folder" / "sub" / "b.jpg", size=(40, 56), shift=6)
    return root


def test_images_and_folders_give_prints_pictures_and_json(images, checkpoints, tmp_path, capsys):
    out = tmp_path / "out"
    assert main([str(images / "single.png"), str(images / "folder"), "--checkpoint",
                 str(checkpoints / "a.pt"), "--out", str(out), "--show-threshold", "0"]) == 0
    printed = capsys.readouterr().out
    assert "single.png: " in printed and "a.png: " in printed and "b.jpg: " in printed
    assert "red " in printed or "blue " in printed
    dets = load_results(out / "detections.json", ["single", "a", "b"], [1, 2], CLASSES)
    assert set(dets.image_index.tolist()) == {0, 1, 2}
    assert (dets.scores > 0).all() and (dets.bbox[:, 2:] > 0).all()
    for name, source in (("single.png", "single.png"), ("a.png", "folder/a.png"),
                         ("b.jpg", "folder/sub/b.jpg")):
        with Image.open(out / name) as drawn, Image.open(images / source) as original:
            assert drawn.size == original.size
            assert not np.array_equal(np.asarray(drawn), np.asarray(original))  # boxes drawn


def test_ensemble_and_print_threshold(images, checkpoints, tmp_path, capsys):
    single, pair = tmp_path / "single", tmp_path / "pair"
    args = [str(images / "single.png"), "--show-threshold", "1",
            "--checkpoint", str(checkpoints / "a.pt")]
    assert main(args + ["--out", str(single)]) == 0
    printed = capsys.readouterr().out  # nothing scores 1: the message says what would show
    rows = json.loads((single / "detections.json").read_text())
    best = max(d["score"] for d in rows)
    assert f"0 detection(s) shown of {len(rows)} (best score {best:.3f}; " \
           "--show-threshold 1 hides them: " \
           f"pass --show-threshold {int(best * 1000) / 1000:g} or lower" in printed, printed
    assert main(args + ["--checkpoint", str(checkpoints / "b.pt"), "--out", str(pair)]) == 0
    one = json.loads((single / "detections.json").read_text())
    two = json.loads((pair / "detections.json").read_text())
    assert one and two and [d["score"] for d in one] != [d["score"] for d in two]


def test_inference_flags_choose_the_path_and_keep_the_detections(images, checkpoints, tmp_path,
                                                                capsys):
    args = [str(images / "folder"), "--show-threshold", "0", "--checkpoint",
            str(checkpoints / "a.pt"), "--checkpoint", str(checkpoints / "b.pt")]
    assert main(args + ["--out", str(tmp_path / "plain"), "--no-channels-last"]) == 0
    assert "2 network(s) on cpu: fp32" in capsys.readouterr().out
    assert main(args + ["--out", str(tmp_path / "fast"), "--stacked", "--channels-last"]) == 0
    assert "2 network(s) on cpu: channels_last, stacked" in capsys.readouterr().out
    plain, fast = (json.loads((tmp_path / name / "detections.json").read_text())
                   for name in ("plain", "fast"))
    assert len(plain) == len(fast) > 0
    for a, b in zip(plain, fast):
        assert (a["image_id"], a["category_id"]) == (b["image_id"], b["category_id"])
        assert np.allclose(a["bbox"], b["bbox"]) and abs(a["score"] - b["score"]) < 1e-5


def inference_path(args, device):
    """The path the detect command asks `Detector.load` for: its flags' keyword arguments."""
    options = inference_options(args)
    return inference_path_for(device, *(options[k] for k in ("precision", "channels_last",
                                                             "stacked", "compile")))


def test_inference_path_is_the_device_default_unless_a_flag_changes_it():
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")  # only the type is read
    args = lambda *flags: build_parser().parse_args(["x.jpg", *flags])  # noqa: E731
    assert inference_path(args(), cuda) == default_path(cuda) == InferencePath(torch.bfloat16)
    assert inference_path(args(), cpu) == InferencePath(channels_last=True)  # the CPU default
    assert inference_path(args("--precision", "fp32"), cuda) == InferencePath()
    assert inference_path(args("--precision", "bf16", "--channels-last", "--compile"), cpu) == \
        InferencePath(torch.bfloat16, channels_last=True, compile="inductor")
    assert inference_path(args("--stacked", "--no-channels-last"), cuda) == \
        InferencePath(torch.bfloat16, stacked=True)


def save_random_imagenet_weights(path):
    """Random GoogLeNet weights whose fc favours labels 11 and 21 (ImageNet classes 10 and 20):
    real weights give such peaked softmaxes, while uniform ones (0.001 a class) would all
    fall under the score threshold."""
    torch.manual_seed(0)
    state = googlenet(weights=None, aux_logits=True, init_weights=True).state_dict()
    state["fc.bias"][[10, 20]] = torch.tensor([8.0, 7.0])
    torch.save(state, path)


def test_default_model_is_imagenet_googlenet(images, tmp_path, imagenet_weights_path, capsys):
    save_random_imagenet_weights(imagenet_weights_path)  # what torchvision would download
    cache = ProposalCache.create(tmp_path / "cache", "selective_search", {})
    cache.save("single", np.array([[5, 5, 30, 25], [35, 20, 60, 45]], np.float32))
    assert main([str(images / "single.png"), "--proposals", str(tmp_path / "cache"),
                 "--out", str(tmp_path / "out"), "--show-threshold", "0", "--max-per-image", "5"]) == 0
    results = json.loads((tmp_path / "out" / "detections.json").read_text())
    assert len(results) == 4 and {r["category_id"] for r in results} == {11, 21}
    names = torchvision.models.GoogLeNet_Weights.IMAGENET1K_V1.meta["categories"]
    printed = capsys.readouterr().out
    assert all(names[r["category_id"] - 1] in printed for r in results)


def broken_image(tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return [str(tmp_path / "broken.jpg"), "--checkpoint", "{a}"]


def empty_cache(tmp_path):
    cache = ProposalCache.create(tmp_path / "c", "selective_search", {})
    cache.save("single", np.zeros((0, 4), np.float32))
    return ["{single}", "--checkpoint", "{a}", "--proposals", str(tmp_path / "c")]


ERRORS = {
    "missing checkpoint": (lambda t: ["{single}", "--checkpoint", str(t / "nope.pt")],
                           "nope.pt: checkpoint not found"),
    "mismatched ensemble": (lambda t: ["{single}", "--checkpoint", "{a}", "--checkpoint", "{cats}"],
                            "cats.pt: its classes differ"),
    "weights that do not fit": (lambda t: ["{single}", "--checkpoint", "{three}"],
                                "three.pt: weights do not fit"),
    "missing input": (lambda t: [str(t / "nope.jpg"), "--checkpoint", "{a}"], "no such image file"),
    "no weights download": (lambda t: ["{single}"], "cannot download torchvision's ImageNet GoogLeNet"),
    "stacked and compiled": (lambda t: ["{single}", "--checkpoint", "{a}", "--stacked",
                                        "--compile"], "choose one of --stacked and --compile"),
}


@pytest.mark.parametrize("case", ERRORS)
@pytest.mark.usefixtures("no_downloads")
def test_user_errors_are_one_line_and_exit_2(case, images, checkpoints, tmp_path, capsys):
    make_args, message = ERRORS[case]
    names = {"single": images / "single.png",
             **{k: checkpoints / f"{k}.pt" for k in ("a", "cats", "three")}}
    args = [a.format(**names) for a in make_args(tmp_path)] + ["--out", str(tmp_path / "out")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    lines = [ln for ln in err.splitlines() if not ln.startswith("detect:")]  # tqdm's bar
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    if case == "no weights download":
        assert "--checkpoint" in lines[0]


@pytest.mark.parametrize("make_args, message", [(broken_image, "cannot decode image"),
                                                 (empty_cache, "single.png: no proposals")],
                         ids=["unreadable image", "no proposals"])
def test_an_image_that_cannot_be_done_is_reported_and_exits_1(make_args, message, images,
                                                              checkpoints, tmp_path, capsys):
    names = {"single": images / "single.png", "a": checkpoints / "a.pt"}
    args = [a.format(**names) for a in make_args(tmp_path)] + ["--out", str(tmp_path / "out")]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "1 image(s), 1 failed:" in err and message in err, err
    assert json.loads((tmp_path / "out" / "detections.json").read_text()) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without CUDA")
def test_cuda_without_a_gpu(images, checkpoints, capsys):
    assert main([str(images / "single.png"), "--checkpoint", str(checkpoints / "a.pt"),
                 "--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_exif_rotated_photo_gives_one_set_of_boxes_with_and_without_proposals(
        checkpoints, tmp_path, capsys):
    """One rule: the stored pixel grid, never the EXIF orientation, whether the proposals are
    computed or read from a cache the propose command made on the folder."""
    from detector.cli.propose import main as propose

    folder = tmp_path / "photos"
    folder.mkdir()
    image = Image.open(write_image(tmp_path / "plain.png"))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees to display (a 64 x 48 grid shows 48 x 64)
    image.save(folder / "rotated.jpg", quality=95, exif=exif.tobytes())
    assert propose(["--images", str(folder), "--out", str(tmp_path / "cache"), "--max-boxes", "6",
                    "--min-box-side", "8", "--workers", "1"]) == 0
    args = [str(folder), "--checkpoint", str(checkpoints / "a.pt"), "--show-threshold", "0"]
    assert main(args + ["--out", str(tmp_path / "computed")]) == 0
    assert main(args + ["--out", str(tmp_path / "cached"),
                        "--proposals", str(tmp_path / "cache")]) == 0
    computed, cached = (json.loads((tmp_path / name / "detections.json").read_text())
                        for name in ("computed", "cached"))
    assert computed and computed == cached
    boxes = np.array([r["bbox"] for r in computed])
    assert (boxes[:, 0] + boxes[:, 2]).max() <= 64 and (boxes[:, 1] + boxes[:, 3]).max() <= 48
    with Image.open(tmp_path / "computed" / "rotated.jpg") as drawn:
        assert drawn.size == (64, 48)  # the annotated copy is in the stored grid too


def test_every_output_path_is_checked_before_the_work(images, checkpoints, tmp_path, capsys):
    (tmp_path / "file").write_text("not a folder")
    assert main([str(images / "single.png"), "--checkpoint", str(checkpoints / "a.pt"),
                 "--out", str(tmp_path / "file")]) == 2
    err = capsys.readouterr()
    assert "--out" in err.err and "is a file" in err.err and "network(s)" not in err.out


def test_two_torchrun_ranks_over_a_folder_write_what_one_process_writes(images, checkpoints,
                                                                        tmp_path, torchrun):
    args = [str(images / "single.png"), str(images / "folder"), "--checkpoint",
            str(checkpoints / "a.pt"), "--device", "cpu", "--show-threshold", "0"]
    assert main(args + ["--out", str(tmp_path / "one")]) == 0
    done = torchrun(["tools/detect.py", *args, "--out", tmp_path / "two"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("wrote ") == 1  # rank 0 alone writes the JSON and reports
    one, two = (tmp_path / "one" / "detections.json"), (tmp_path / "two" / "detections.json")
    assert json.loads(one.read_text()) and two.read_text() == one.read_text()
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == \
        sorted(p.name for p in (tmp_path / "one").iterdir())
