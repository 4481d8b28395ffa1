"""Checkpoints (decoderlab.checkpoint): the record is exactly what builds the model, every load verifies it, a
corrupt file is an error naming it, a failed save leaves nothing behind."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import torch

from decoderlab.checkpoint import (
    FORMAT_VERSION,
    atomic_save,
    load_model,
    newest_intact_checkpoint,
    read_checkpoint,
    seal,
    write_checkpoint,
)
from decoderlab.components.tokenizers import TOKENIZERS
from decoderlab.errors import UserError
from decoderlab.model import Decoder, ModelConfig

CFG = ModelConfig(n_layers=1, n_heads=2, d_model=16, block_size=8, positional={"name": "rope"})


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, Decoder]:
    torch.manual_seed(0)
    tok = TOKENIZERS.build({"name": "byte"})
    model = Decoder(CFG, tok.vocab_size)
    return write_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt", model, tok), model


def _raw(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def test_a_checkpoint_rebuilds_its_model_from_the_record_alone(saved):
    path, model = saved
    for where in (path, path.parent.parent):  # a checkpoint file, or its run directory
        rebuilt, tok, record = load_model(where)
        idx = torch.randint(0, tok.vocab_size, (2, 8))
        torch.testing.assert_close(rebuilt(idx), model.eval()(idx))
        assert record["format"] == FORMAT_VERSION and len(record["checksum"]) == 64
        assert set(record["model"]) == {f for f in vars(CFG)}  # exactly the fields that build the model


def test_changed_weights_are_a_corrupt_checkpoint_named_by_its_file(saved):
    path, _ = saved
    ckpt = _raw(path)
    ckpt["state_dict"]["model.tok_emb.weight"][3, 5] += 1e-3  # one value, saved without a new checksum
    torch.save(ckpt, path)
    with pytest.raises(UserError, match=rf"{path}: checkpoint is corrupt"):
        load_model(path)


def test_a_truncated_file_is_an_error_naming_it(saved):
    path, _ = saved
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(UserError, match=rf"cannot load checkpoint {path}"):
        read_checkpoint(path)


def test_an_unknown_model_field_is_an_error_naming_it(saved):
    path, _ = saved
    ckpt = _raw(path)
    ckpt["decoderlab"]["model"]["n_expertz"] = 8
    torch.save(seal(ckpt), path)
    with pytest.raises(UserError, match=r"unknown field\(s\) n_expertz in the checkpoint's model record"):
        load_model(path)


def test_a_newer_format_is_refused(saved):
    path, _ = saved
    ckpt = _raw(path)
    ckpt["decoderlab"]["format"] = FORMAT_VERSION + 1
    torch.save(ckpt, path)
    with pytest.raises(UserError, match="newer than this decoderlab reads"):
        read_checkpoint(path)


def test_a_checkpoint_from_before_format_versions_still_loads(saved):
    """Records written before FORMAT_VERSION 1 carried run-level keys and no checksum."""
    path, model = saved
    ckpt = _raw(path)
    record = ckpt["decoderlab"]
    del record["format"], record["checksum"]
    record["model"].update(init_from=None, param_budget=None)
    torch.save(ckpt, path)
    rebuilt, _, _ = load_model(path)
    assert rebuilt.param_counts() == model.param_counts()


def test_a_failed_save_keeps_the_old_file_and_leaves_no_temporary(saved):
    path, _ = saved
    before = path.read_bytes()
    with pytest.raises(Exception):  # noqa: B017 - whatever torch.save raises on an unpicklable object
        atomic_save({"state_dict": {}, "oops": lambda: None}, path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(path.parent)) == ["last.ckpt"]


def test_newest_intact_checkpoint_skips_corrupt_ones_with_a_warning(saved, caplog):
    path, _ = saved
    run = path.parent.parent
    ckpts = path.parent
    older, newer = ckpts / "step000003.ckpt", ckpts / "step000006.ckpt"
    older.write_bytes(path.read_bytes())
    newer.write_bytes(b"not a checkpoint")
    path.write_bytes(path.read_bytes()[:100])  # last.ckpt truncated
    for i, p in enumerate((older, newer, path)):
        os.utime(p, (1000 + i, 1000 + i))
    with caplog.at_level(logging.WARNING, logger="decoderlab.checkpoint"):
        assert newest_intact_checkpoint(run) == older
    assert "last.ckpt" in caplog.text and "step000006.ckpt" in caplog.text
    older.unlink()
    assert newest_intact_checkpoint(run) is None


def test_a_full_disk_is_a_clear_error_and_keeps_the_previous_checkpoint(saved, monkeypatch):
    """torch.save reports ENOSPC as a RuntimeError wrapping the OSError; either way the message says "no space"."""
    import errno

    path, model = saved
    before = path.read_bytes()

    def full(obj, f):
        f.write(b"partial")
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as e:
            raise RuntimeError("[enforce fail at inline_container.cc] . PytorchStreamWriter failed writing file") from e

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(UserError, match=r"cannot save checkpoint: no space left on device writing .*last\.ckpt; "
                                        r"the previous file is intact"):
        atomic_save({"state_dict": model.state_dict()}, path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(path.parent)) == ["last.ckpt"]


def test_status_is_written_in_place_when_the_disk_has_no_room_for_a_copy(tmp_path, monkeypatch):
    import json

    from decoderlab import rundir

    rundir.write_status(tmp_path, "running")

    def no_room(path, data):
        raise rundir.DiskFullError("no space left on device")

    monkeypatch.setattr(rundir, "atomic_write", no_room)
    rundir.write_status(tmp_path, "failed", error="cannot save checkpoint: no space left on device")
    record = json.loads((tmp_path / "status.json").read_text())
    assert record["status"] == "failed" and "no space left" in record["error"]


def test_a_recorded_plugin_module_that_does_not_register_the_component_is_named_with_its_file():
    """A checkpoint names the module of a plugin component; if that module imports but registers something else
    (another plugin of the same file name), the load stops on one line naming the module and its file."""
    import json

    from decoderlab.checkpoint import require_plugins

    record = {"plugins": {"model/norm": {"name": "no_such_norm", "module": "json"}}}
    with pytest.raises(UserError, match=f"model/norm=no_such_norm from the plugin module 'json', but "
                                        f"{json.__file__} does not register it"):
        require_plugins(record, "x.ckpt")


def _disk_full(monkeypatch):
    import errno

    def full(obj, f):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)


def test_a_full_disk_at_the_first_checkpoint_says_there_is_nothing_to_resume(tmp_path, monkeypatch):
    path = tmp_path / "run" / "checkpoints" / "last.ckpt"
    _disk_full(monkeypatch)
    with pytest.raises(UserError) as err:
        atomic_save({"state_dict": {}}, path)
    assert str(err.value) == (f"cannot save checkpoint: no space left on device writing {path}; no earlier checkpoint "
                              f"exists, so there is nothing to resume from (free some space and start the run again)")
    assert os.listdir(path.parent) == []


def test_a_full_disk_at_a_new_numbered_checkpoint_names_the_ones_kept(saved, monkeypatch):
    path, _ = saved
    numbered = path.parent / "step000004.ckpt"
    _disk_full(monkeypatch)
    with pytest.raises(UserError) as err:
        atomic_save({"state_dict": {}}, numbered)
    assert str(err.value).endswith(f"writing {numbered}; the run's earlier checkpoints are intact (last.ckpt; free "
                                   f"some space and resume)")
    assert newest_intact_checkpoint(path.parent.parent) == path


def _with_training_state(path: Path) -> dict:
    """The file at ``path`` with what a Lightning checkpoint adds (optimizer state, loops, step), sealed."""
    ckpt = _raw(path)
    weights = ckpt["state_dict"]
    ckpt.update({
        "epoch": 0, "global_step": 6,
        "optimizer_states": [{"state": {i: {"step": torch.tensor(6.0), "exp_avg": torch.randn_like(t),
                                            "exp_avg_sq": torch.rand_like(t)} for i, t in enumerate(weights.values())},
                              "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.95), "params": list(range(len(weights)))}]}],
        "lr_schedulers": [{"last_epoch": 6, "base_lrs": [1e-3]}],
        "loops": {"fit_loop": {"epoch_progress": {"total": {"ready": 1, "completed": 0}}}},
        "hyper_parameters": {"tags": {"b", "a", "c"}, "size": torch.Size([2, 3])},
    })
    torch.save(seal(ckpt), path)
    return ckpt


def _corrupt_adam(ckpt: dict) -> None:
    ckpt["optimizer_states"][0]["state"][0]["exp_avg_sq"].view(-1)[0] += 1.0


def _corrupt_step(ckpt: dict) -> None:
    ckpt["global_step"] = 60


def _corrupt_loop(ckpt: dict) -> None:
    ckpt["loops"]["fit_loop"]["epoch_progress"]["total"]["completed"] = 1


@pytest.mark.parametrize("corrupt", [_corrupt_adam, _corrupt_step, _corrupt_loop])
def test_a_corrupt_training_state_is_a_corrupt_checkpoint_named_by_its_file(saved, corrupt):
    """The seal covers what a resume restores, not only the weights: a changed optimizer state, step or loop
    state (saved without a new seal) is refused on load, naming the file; the intact file loads."""
    path, _ = saved
    ckpt = _with_training_state(path)
    assert read_checkpoint(path)["global_step"] == 6  # sealed, saved, loaded in order: the seal holds
    corrupt(ckpt)
    torch.save(ckpt, path)
    with pytest.raises(UserError, match=rf"^{path}: checkpoint is corrupt: its training state"):
        read_checkpoint(path)
    assert newest_intact_checkpoint(path.parent.parent) is None  # --resume skips it, with a warning naming it


def test_a_format_1_checkpoint_sealed_on_its_weights_only_still_loads(saved):
    path, model = saved
    ckpt = _with_training_state(path)
    record = ckpt["decoderlab"]
    record["format"] = 1
    del record["training_checksum"]
    _corrupt_adam(ckpt)  # format 1 never sealed it: nothing to check it against
    torch.save(ckpt, path)
    loaded, _, _ = load_model(path)
    assert torch.equal(loaded.tok_emb.weight, model.tok_emb.weight)
    ckpt["state_dict"]["model.tok_emb.weight"][0, 0] += 1.0  # its weights are still checked
    torch.save(ckpt, path)
    with pytest.raises(UserError, match=rf"{path}: checkpoint is corrupt: its weights"):
        read_checkpoint(path)


def test_a_format_2_checkpoint_without_its_training_seal_is_refused(saved):
    path, _ = saved
    ckpt = _with_training_state(path)
    del ckpt["decoderlab"]["training_checksum"]
    torch.save(ckpt, path)
    with pytest.raises(UserError, match=rf"{path}: checkpoint has no training-state checksum"):
        read_checkpoint(path)
