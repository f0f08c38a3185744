"""A site's classifier saved outside the program (torchvision, random weights, safetensors) imports through
the command line and runs sample, explain, critique (simulated) and align on a 224-pixel project."""

import json

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from lvlmva_desktop.cli import main
from lvlmva_desktop.core.store.project import Project
from lvlmva_desktop.report.document import attribution_text


@pytest.fixture(scope="module")
def data_224(tmp_path_factory):
    data = tmp_path_factory.mktemp("data224")
    assert main(["generate", "isic-like", str(data), "--quiet", "--param", "n_train=16", "--param", "n_test=8",
                 "--param", "size=224"]) == 0  # fmt: skip
    return data


def _site_model(arch: str, path):
    torch.manual_seed(0)
    model = torchvision.models.get_model(arch, weights=None, num_classes=2)
    for m in model.modules():  # torchvision starts some heads at zero; a trained model's are not
        if isinstance(m, torch.nn.Linear) and not m.weight.abs().sum():
            torch.nn.init.normal_(m.weight, std=0.05)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.mark.slow
@pytest.mark.parametrize(
    "arch,method", [("densenet121", "deeplift_shap"), ("efficientnet_b0", "integrated_gradients"),
                    ("vit_b_16", "integrated_gradients")]
)  # fmt: skip
def test_a_site_classifier_runs_every_step_from_the_command_line(arch, method, data_224, tmp_path, capsys):
    proj = tmp_path / "p"
    assert main(["import", str(proj), "--csv", str(data_224 / "manifest.csv"), "--image-size", "224",
                 "--channels", "3", "--name", "site"]) == 0  # fmt: skip
    weights = _site_model(arch, tmp_path / f"{arch}.safetensors")
    assert main(["import-model", str(proj), str(weights), "--arch", arch, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "Preprocessing: input 224x224, normalised by mean (0.485, 0.456, 0.406)" in out
    fast = ["--quiet", "--set", "sampling.n=3"]
    assert main(["sample", str(proj), *fast]) == 0
    assert main(["explain", str(proj), *fast, "--set", "explain.batch_size=3"]) == 0
    assert main(["critique", str(proj), "--critic", "simulated", "--quiet"]) == 0
    assert main(["align", str(proj), "--quiet", "--set", "align.epochs=1", "--set", "align.lambda=1",
                 "--set", "align.batch_size=8"]) == 0  # fmt: skip
    capsys.readouterr()
    with Project.open(proj) as p:
        models = p.models()
        assert [m["kind"] for m in models] == ["imported", "rrr"]
        tuned, spec = p.load_model(models[-1]["id"])
        original, spec0 = p.load_model(models[0]["id"])
        assert spec.preprocess == spec0.preprocess  # the retrained version keeps the preprocessing
        assert spec.arch == arch
        x = p.load_split("train").x[:2]
        with torch.no_grad():
            assert not torch.equal(tuned(x), original(x))  # RRR changed the weights
        row = p.db.execute("SELECT settings FROM explanations ORDER BY id DESC").fetchone()
        recorded = json.loads(row["settings"])["attribution"]
        assert recorded["method"] == method
        assert (recorded["note"] == "") == (method == "deeplift_shap")
    name = "DeepLIFT-SHAP" if method == "deeplift_shap" else "integrated gradients (DeepLIFT-SHAP cannot"
    assert attribution_text(json.loads(row["settings"])).startswith(name)  # as the report says it


def test_train_fine_tunes_from_local_imagenet_weights(data_224, tmp_path, capsys):
    """`train --arch NAME --weights FILE`: a 1000-class ImageNet file (as torchvision saves it; here random)
    gives the backbone, the head is new, and the model version records ImageNet's normalisation."""
    proj = tmp_path / "p"
    assert main(["import", str(proj), "--csv", str(data_224 / "manifest.csv"), "--image-size", "64",
                 "--channels", "1", "--name", "grey"]) == 0  # fmt: skip
    torch.manual_seed(1)
    src = torchvision.models.mobilenet_v2(weights=None)  # 1000 classes
    weights = tmp_path / "mobilenet_v2_imagenet.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(weights))
    capsys.readouterr()
    assert main(["train", str(proj), "--arch", "mobilenet_v2", "--weights", str(weights), "--quiet",
                 "--set", "train.epochs=1"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "preprocessing: input 64x64, grey repeated into 3 channels, normalised by mean (0.485" in out
    with Project.open(proj) as p:
        model, spec = p.load_model(p.models()[0]["id"])
        info = json.loads(p.model_row(p.models()[0]["id"])["info"])
    assert spec.arch == "mobilenet_v2" and spec.preprocessing().grey_to_colour
    assert set(info["skipped_keys"]) == {"classifier.1.weight", "classifier.1.bias"}  # the 1000-class head
    assert model(torch.rand(2, 1, 64, 64)).shape == (2, 2)
    # explained and reported: the report names the architecture, its input and the attribution method
    assert main(["sample", str(proj), "--quiet", "--set", "sampling.n=6"]) == 0
    assert main(["explain", str(proj), "--quiet"]) == 0
    assert main(["critique", str(proj), "--critic", "simulated", "--quiet"]) == 0
    assert main(["report", str(proj), "--out", str(tmp_path / "report"), "--no-pdf", "--quiet"]) == 0
    html = next((tmp_path / "report").glob("*.html")).read_text()
    assert "mobilenet_v2; input 64x64, grey repeated into 3 channels, normalised by mean (0.485" in html
    assert "attributions by DeepLIFT-SHAP;" in html
    # a typo in the architecture is told with the close names, before anything runs
    with pytest.raises(SystemExit) as e:
        main(["train", str(proj), "--arch", "mobilenetv2", "--quiet"])
    assert e.value.code == 2
    assert "Did you mean mobilenet_v2" in capsys.readouterr().err
