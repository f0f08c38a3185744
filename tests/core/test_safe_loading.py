"""Safe loading: weights a user brings are tensors only (a pickle that would run code is refused before it
runs), and a model version whose file changed on disk is refused by its sha256."""

from __future__ import annotations

import os
import pickle
import stat

import pytest
import torch
from safetensors.torch import save_file

from lvlmva_desktop.cli import main
from lvlmva_desktop.core.method.models import ModelSpec, build_model, load_pretrained_weights
from lvlmva_desktop.core.method.pipeline import import_model
from lvlmva_desktop.core.store.project import Project, ProjectError

SPEC = ModelSpec("small_cnn", 2, 3, (16, 16))


class RunsCodeWhenUnpickled:
    """Unpickling this object calls exec, which writes ``marker``: what a malicious checkpoint does."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('code ran')",))


def _evil_checkpoints(tmp_path, marker) -> dict[str, object]:
    """Checkpoints in each pickle form torch users meet, each with a tensor state dict plus the payload."""
    state = build_model(SPEC).state_dict()
    out = {}
    out["zip"] = tmp_path / "evil.pth"  # torch.save's zip format
    torch.save({**state, "payload": RunsCodeWhenUnpickled(marker)}, out["zip"])
    out["nested"] = tmp_path / "nested.pt"  # a training checkpoint: {"state_dict": ..., "extra": object}
    torch.save({"state_dict": state, "optimizer": RunsCodeWhenUnpickled(marker)}, out["nested"])
    out["legacy"] = tmp_path / "legacy.pth"  # a bare pickle stream (protocol 4: rejected at its opcodes)
    with open(out["legacy"], "wb") as f:
        pickle.dump({"payload": RunsCodeWhenUnpickled(marker)}, f)
    out["legacy2"] = tmp_path / "legacy2.pth"  # torch's pre-1.6 format uses protocol 2
    with open(out["legacy2"], "wb") as f:
        pickle.dump({"payload": RunsCodeWhenUnpickled(marker)}, f, protocol=2)
    return out


def test_the_payload_really_runs_code_when_unpickled_unsafely(tmp_path):
    """The control: loading the same file the unsafe way runs the payload, so the refusals below mean it."""
    marker = tmp_path / "ran"
    path = _evil_checkpoints(tmp_path, marker)["zip"]
    torch.load(path, weights_only=False)  # what the package never does (tests/test_architecture.py)
    assert marker.read_text() == "code ran"


@pytest.mark.parametrize("form", ["zip", "nested", "legacy", "legacy2"])
def test_pickle_checkpoint_with_an_object_is_refused_before_it_runs(tmp_path, form):
    marker = tmp_path / "ran"
    path = _evil_checkpoints(tmp_path, marker)[form]
    with pytest.raises(ValueError) as err:
        load_pretrained_weights(build_model(SPEC), SPEC, path)
    assert not marker.exists()
    msg = str(err.value)
    assert "refused" in msg and "state_dict()" in msg
    # the zip forms name the callable the pickle wanted to run; a legacy stream fails at its opcodes first
    assert ("could run code" in msg and "exec" in msg) if form != "legacy" else "plain tensors" in msg
    assert "weights_only" not in msg and "\x1b[" not in msg  # not torch's advice to switch the check off


def test_tensor_only_checkpoints_load(tmp_path):
    src = build_model(SPEC).eval()
    x = torch.rand(2, 3, 16, 16)
    for name, obj in {
        "plain.pth": src.state_dict(),
        "wrapped.pt": {"state_dict": src.state_dict()},
        "module-prefixed.pth": {f"module.{k}": v for k, v in src.state_dict().items()},  # DataParallel
    }.items():
        torch.save(obj, tmp_path / name)
        dst = build_model(SPEC)
        assert load_pretrained_weights(dst, SPEC, tmp_path / name) == []
        assert torch.allclose(dst.eval()(x), src(x))


@pytest.mark.parametrize(
    "name, content, words",
    [
        ("garbage.pth", b"not a checkpoint at all" * 5, "not a checkpoint of plain tensors"),
        ("empty.pth", b"", "not a PyTorch weights file"),
        ("garbage.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage", "not a readable safetensors"),
        ("list.pth", None, "state dict of tensors"),
    ],
)
def test_unreadable_weight_files_are_one_clear_error(tmp_path, name, content, words):
    path = tmp_path / name
    if content is None:
        torch.save([torch.zeros(2)], path)
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=words):
        load_pretrained_weights(build_model(SPEC), SPEC, path)


def test_import_model_refuses_the_pickle_and_the_cli_says_so_in_one_line(tmp_path, capsys):
    marker = tmp_path / "ran"
    path = _evil_checkpoints(tmp_path, marker)["zip"]
    with Project.create(tmp_path / "p", "t", ["a", "b"], (16, 16), 3) as p:
        with pytest.raises(ValueError, match="could run code"):
            import_model(p, str(path), "small_cnn")
        assert p.models() == []
        run = p.db.execute("SELECT status, error FROM runs WHERE kind='import_model'").fetchone()
        assert run["status"] == "failed" and "could run code" in run["error"]
    assert main(["import-model", str(tmp_path / "p"), str(path), "--arch", "small_cnn"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "could run code" in err and "Traceback" not in err
    assert len(err.splitlines()) == 1 and not marker.exists()


def test_model_version_changed_on_disk_is_refused(tmp_path):
    with Project.create(tmp_path / "p", "t", ["a", "b"], (16, 16), 3) as p:
        mid = p.save_model(build_model(SPEC), SPEC, "m", "erm", None, None)
        p.load_model(mid)  # intact: loads
        path = p.abs(p.model_row(mid)["path"])
        assert not os.stat(path).st_mode & stat.S_IWUSR  # stored read-only
        # swap in other, perfectly valid weights of the same architecture (a silent substitution)
        os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
        torch.manual_seed(99)
        other = build_model(SPEC)
        from lvlmva_desktop.core.method.models import spec_metadata

        save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(path), spec_metadata(SPEC))
        with pytest.raises(ProjectError, match=f"Model version {mid} was modified on disk"):
            p.load_model(mid)
        # one flipped byte is enough
        mid2 = p.save_model(build_model(SPEC), SPEC, "m2", "erm", None, None)
        path2 = p.abs(p.model_row(mid2)["path"])
        os.chmod(path2, stat.S_IRUSR | stat.S_IWUSR)
        data = bytearray(path2.read_bytes())
        data[-1] ^= 1
        path2.write_bytes(bytes(data))
        with pytest.raises(ProjectError, match="sha256 mismatch"):
            p.load_model(mid2)
        path2.unlink()
        with pytest.raises(ProjectError, match="missing"):
            p.load_model(mid2)
