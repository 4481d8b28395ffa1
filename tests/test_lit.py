"""LitDecoder: the LR schedule, the fused-AdamW choice, the divergence guard, clipping, NaN-honest validation,
host syncs only at logging points, and a compiled training step."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from decoderlab.config import OptimConfig, TrainerConfig
from decoderlab.guard import NonFiniteError, NonFiniteGuard
from decoderlab.lit import LitDecoder, lr_at, use_fused
from decoderlab.model import Decoder, ModelConfig

V, T = 11, 8

# ---------------------------------------------------------------- lr_at / use_fused


def test_lr_warmup_peak_cosine_midpoint_and_floor():
    c = OptimConfig(lr=1.0, min_lr=0.1, warmup_steps=4)
    assert lr_at(0, c, 104) == pytest.approx(1 / 5)  # linear warmup: lr * (step + 1) / (warmup + 1)
    assert lr_at(3, c, 104) == pytest.approx(4 / 5)
    assert lr_at(4, c, 104) == 1.0  # peak right after warmup
    assert lr_at(54, c, 104) == pytest.approx(0.55)  # cosine midpoint: (lr + min_lr) / 2
    assert lr_at(104, c, 104) == 0.1 and lr_at(500, c, 104) == 0.1  # floor at and after the end of the decay
    rates = [lr_at(s, c, 104) for s in range(4, 105)]
    assert all(a > b for a, b in zip(rates, rates[1:]))  # strictly decreasing during the decay


def test_lr_decay_steps_ends_the_decay_before_max_steps():
    c = OptimConfig(lr=1.0, min_lr=0.1, warmup_steps=0, decay_steps=10)
    assert lr_at(5, c, 1000) == pytest.approx(0.55)
    assert lr_at(10, c, 1000) == 0.1 and lr_at(999, c, 1000) == 0.1


def test_the_scheduler_follows_lr_at():
    c = OptimConfig(lr=0.5, min_lr=0.05, warmup_steps=3)
    lit = LitDecoder(_model(), c, np.ones(V), max_steps=20)
    lit.trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    sched = lit.configure_optimizers()["lr_scheduler"]["scheduler"]
    for step in range(25):
        assert sched.get_last_lr()[0] == pytest.approx(lr_at(step, c, 20), rel=1e-12), step
        sched.optimizer.step()
        sched.step()


def test_use_fused():
    cpu = [torch.zeros(2)]
    assert use_fused(None, cpu) is True  # default on for CPU (and CUDA) parameters
    assert use_fused(None, [torch.zeros(2, device="meta")]) is False
    assert use_fused(False, cpu) is False and use_fused(True, [torch.zeros(2, device="meta")]) is True


# ---------------------------------------------------------------- the guard alone


def test_guard_stop_names_the_step_and_what_was_not_finite():
    g = NonFiniteGuard("stop", 5)
    g.see_loss(torch.tensor(2.0))
    assert g.judge(torch.tensor(1.0), step=0).item() == 0.0
    g.check()  # nothing to report
    g.see_loss(torch.tensor(2.0))
    assert g.judge(torch.tensor(math.inf), step=7).item() == 1.0
    g.see_loss(torch.tensor(2.0))
    assert g.judge(torch.tensor(1.0), step=8).item() == 1.0  # latched: nothing applied after the halt
    with pytest.raises(NonFiniteError, match="non-finite gradient norm at step 7.*x.ckpt"):
        g.check("x.ckpt")
    g2 = NonFiniteGuard("stop", 5)
    g2.see_loss(torch.tensor(math.nan))
    g2.judge(torch.tensor(1.0), step=3)
    with pytest.raises(NonFiniteError, match="non-finite loss at step 3"):
        g2.check()


def test_guard_skip_counts_and_stops_after_n_in_a_row():
    g = NonFiniteGuard("skip", 3)
    flags = []
    for step, bad in enumerate([1, 0, 1, 1, 0, 1, 1]):
        g.see_loss(torch.tensor(math.nan if bad else 1.0))
        flags.append(g.judge(torch.tensor(1.0), step).item())
    assert flags == [1, 0, 1, 1, 0, 1, 1]
    g.check()  # never 3 in a row
    assert g.state() == {"nonfinite_skipped": 5, "nonfinite_run": 2}
    g.see_loss(torch.tensor(math.nan))
    g.judge(torch.tensor(1.0), 7)
    with pytest.raises(NonFiniteError, match="3 non-finite updates in a row, the last at step 7"):
        g.check()


@pytest.mark.parametrize("mode,limit", [("halt", 1), ("skip", 0)])
def test_guard_rejects_bad_settings(mode, limit):
    with pytest.raises(Exception, match="trainer.on_nonfinite|trainer.max_nonfinite_in_a_row"):
        NonFiniteGuard(mode, limit)


# ---------------------------------------------------------------- real fits, in process


def _model(dropout: float = 0.0) -> Decoder:
    torch.manual_seed(0)
    return Decoder(ModelConfig(n_layers=1, n_heads=2, d_model=16, block_size=T, dropout=dropout,
                               positional={"name": "learned"}), V)


def _loader(n: int = 64, bs: int = 4) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, V, (n, T + 1), generator=g)
    return DataLoader(TensorDataset(ids[:, :-1], ids[:, 1:]), batch_size=bs)


class PoisonedLit(LitDecoder):
    """Returns a NaN loss at the given global steps; records what the optimizer saw."""

    poison: tuple[int, ...] = ()

    def training_step(self, batch, batch_idx):
        fn = self.model.loss
        self._loss_fn = (lambda x, y: fn(x, y) * math.nan) if self.global_step in self.poison else fn
        return super().training_step(batch, batch_idx)

    def on_train_batch_start(self, batch, batch_idx):
        self.before = {k: v.clone() for k, v in self.model.state_dict().items()}
        if self.poison and self.global_step == self.poison[0]:
            self.at_poison = self.before

    def on_before_optimizer_step(self, optimizer):
        super().on_before_optimizer_step(optimizer)
        self.clipped_norm = torch.nn.utils.get_total_norm([p.grad for p in self.model.parameters()
                                                            if p.grad is not None]).item()


def _fit(lit: LitDecoder, steps: int, accelerator: str = "cpu", **trainer_kwargs) -> L.Trainer:
    trainer = L.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator=accelerator, devices=1, **trainer_kwargs)
    trainer.fit(lit, train_dataloaders=_loader())
    return trainer


def _lit(cls=PoisonedLit, poison=(), fused=None, **trainer_cfg) -> LitDecoder:
    lit = cls(_model(), OptimConfig(fused=fused, warmup_steps=0), np.ones(V), max_steps=8, log_every=4,
              trainer=TrainerConfig(**trainer_cfg))
    lit.poison = poison
    return lit


ACCELERATORS = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


@pytest.mark.parametrize("accelerator", ACCELERATORS)
@pytest.mark.parametrize("fused", [True, False])  # on the device (found_inf) / grads dropped after a host sync
def test_skip_leaves_the_weights_and_optimizer_untouched_by_a_bad_step(fused, accelerator):
    lit = _lit(poison=(2, 5), fused=fused, on_nonfinite="skip", max_nonfinite_in_a_row=2)
    _fit(lit, 8, accelerator=accelerator)
    opt = lit.trainer.optimizers[0]
    assert opt.defaults["fused"] is fused
    steps = {int(s["step"]) for s in opt.state.values()}
    assert steps == {6}  # 8 steps, 2 skipped: neither moments nor step counts moved on the bad steps
    assert lit.guard.state()["nonfinite_skipped"] == 2
    assert all(torch.isfinite(p).all() for p in lit.model.parameters())


@pytest.mark.parametrize("accelerator", ACCELERATORS)
def test_stop_raises_before_the_update_and_keeps_the_weights_of_the_step_before(accelerator):
    lit = _lit(poison=(5,))
    with pytest.raises(NonFiniteError, match="non-finite loss( and gradient norm)? at step 5"):
        _fit(lit, 8, accelerator=accelerator)  # log_every=4: the verdict is read back at the end of training
    after = lit.model.state_dict()  # on the CPU: Lightning's teardown after the error moved the model back
    assert all(torch.equal(after[k], v.cpu()) for k, v in lit.at_poison.items())  # steps 5..7 skipped (latched)


def test_stop_at_a_logging_step_raises_at_once():
    lit = _lit(poison=(3,))  # log_every=4: step 3 reads the verdict back ((3 + 1) % 4 == 0)
    with pytest.raises(NonFiniteError, match="non-finite loss( and gradient norm)? at step 3"):
        _fit(lit, 8)
    after = lit.model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in lit.before.items())  # step 3's update was not applied
    assert lit.global_step == 3


def test_a_checkpoint_with_non_finite_weights_is_never_written(tmp_path: Path):
    lit = _lit()
    trainer = _fit(lit, 1)
    with torch.no_grad():
        next(lit.model.parameters())[0, 0] = math.inf
    with pytest.raises(NonFiniteError, match="non-finite weights at step 1"):
        trainer.save_checkpoint(tmp_path / "x.ckpt")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("accelerator", ACCELERATORS)
def test_bf16_mixed_with_fused_adamw_clips_the_gradients(accelerator):
    lit = _lit(gradient_clip_val=1e-3)  # fused by default, on CPU and CUDA
    _fit(lit, 3, accelerator=accelerator, precision="bf16-mixed")
    assert lit.trainer.optimizers[0].defaults["fused"] is True
    assert lit.clipped_norm == pytest.approx(1e-3, rel=1e-3)  # clipped once, by the norm the guard also used


def test_validation_reports_nan_instead_of_dropping_it():
    lit = _lit()
    with torch.no_grad():
        lit.model.tok_emb.weight[3] = math.nan
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    metrics = trainer.validate(lit, dataloaders=_loader(16, 8), verbose=False)[0]
    assert math.isnan(metrics["val/loss"]) and math.isnan(metrics["val/bpb"])
    assert metrics["val/windows"] == 16


def test_decoderlab_reads_device_values_only_at_logging_steps(monkeypatch):
    """On a GPU every Tensor.item()/bool()/float() is a device->host sync: the training step's own code (lit.py,
    guard.py) may read values back only at logging steps (and at the end of training)."""
    import traceback

    calls: list[int] = []
    lit = _lit(cls=LitDecoder)
    for name in ("item", "__bool__", "__float__", "__int__", "tolist", "cpu", "to"):
        orig = getattr(torch.Tensor, name)

        def counted(self, *a, _orig=orig, **k):
            caller = traceback.extract_stack(limit=2)[0].filename  # who called .item() & co.
            if lit._trainer is not None and lit.trainer.training and caller.endswith(
                    ("decoderlab/lit.py", "decoderlab/guard.py")):
                calls.append(lit.global_step)
            return _orig(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)
    _fit(lit, 9, log_every_n_steps=4)
    assert set(calls) == {3, 7, 8, 9}  # steps Lightning writes ((step + 1) % 4 == 0), the last step, the end check


@pytest.mark.cuda
@pytest.mark.parametrize("pe", ["none", "t5"])  # t5: eager FlexAttention, a causal block mask built every step
def test_no_device_sync_between_logging_steps_on_cuda(pe):
    """The real check, on a GPU: CUDA's sync debug mode flags every synchronizing call, from one step's start to
    the next's (Lightning's own end-of-step work included)."""
    import warnings

    lit = LitDecoder(Decoder(ModelConfig(n_layers=1, n_heads=2, d_model=32, block_size=T,
                                         positional={"name": pe}), V), OptimConfig(), np.ones(V), 12, log_every=5)
    per_step: dict[int, int] = {}

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")

        class Watch(L.Callback):
            step: int | None = None

            def _close(self) -> None:
                if self.step is not None:
                    per_step[self.step] = len([w for w in caught[self.seen:] if "synchroniz" in str(w.message)])

            def on_train_batch_start(self, trainer, module, batch, i):
                self._close()
                self.seen, self.step = len(caught), trainer.global_step
                torch.cuda.set_sync_debug_mode("warn")

            def on_train_end(self, trainer, module):
                torch.cuda.set_sync_debug_mode("default")
                self._close()

        trainer = L.Trainer(max_steps=12, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            accelerator="cuda", devices=1, callbacks=[Watch()])
        trainer.fit(lit, train_dataloaders=_loader())
    # logging steps ((step + 1) % 5 == 0) and the last one (its log and the end-of-training check)
    assert len(per_step) == 12 and {s for s, n in per_step.items() if n} <= {4, 9, 11}, per_step


@pytest.mark.slow
def test_compile_traces_the_training_step_backward_and_reuses_the_validation_graph():
    from functorch.compile import make_boxed_func
    from torch._dynamo import register_backend
    from torch._dynamo.backends.common import aot_autograd

    graphs = {"forward": 0, "backward": 0}

    def counting(kind):
        def compiler(gm, example_inputs):
            graphs[kind] += 1
            return make_boxed_func(gm.forward)
        return compiler

    register_backend(aot_autograd(fw_compiler=counting("forward"), bw_compiler=counting("backward")),
                     name="decoderlab_counting")
    torch._dynamo.reset()
    lit = _lit(cls=LitDecoder, compile=True, compile_backend="decoderlab_counting")
    after_val: list[dict] = []

    class AfterVal(L.Callback):
        def on_validation_end(self, trainer, module):
            after_val.append(dict(graphs))

    trainer = L.Trainer(max_steps=6, val_check_interval=2, check_val_every_n_epoch=None, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        accelerator="cpu", callbacks=[AfterVal()], num_sanity_val_steps=0)
    trainer.fit(lit, train_dataloaders=_loader(), val_dataloaders=_loader(16, 8))
    assert after_val[0]["backward"] >= 1  # the training step ran compiled: a backward graph was traced
    assert len(after_val) == 3 and after_val[-1] == after_val[0]  # later validations and steps reuse the graphs
    assert all(k.startswith("model.") for k in lit.state_dict())  # the checkpoint keeps the model's own keys


def test_the_state_dict_holds_the_model_once_under_its_own_keys():
    lit = _lit(cls=LitDecoder)
    assert sorted(lit.state_dict()) == sorted(f"model.{k}" for k in lit.model.state_dict())


def _shard_norm(rank: int, world: int, port: int, grads: list, out) -> None:
    import torch.distributed as dist

    from decoderlab.lit import total_grad_norm

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        mine = [g[rank::world] for g in grads]  # a disjoint shard of every gradient, as FSDP holds it
        out.put((rank, float(total_grad_norm(mine, sharded=True))))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_the_gradient_norm_of_sharded_gradients_is_the_norm_of_all_of_them():
    import socket

    import torch.multiprocessing as mp

    from decoderlab.lit import total_grad_norm

    torch.manual_seed(0)
    grads = [torch.randn(7, 3), torch.randn(5)]
    full = float(total_grad_norm(grads))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_shard_norm, args=(r, 2, port, grads, out)) for r in range(2)]
    for p in procs:
        p.start()
    got = dict(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    assert got[0] == pytest.approx(full, rel=1e-6) and got[1] == pytest.approx(full, rel=1e-6)
    unsharded = float(torch.nn.utils.get_total_norm([g[0::2] for g in grads]))
    assert unsharded < full * 0.9  # what each rank alone would have clipped with


class Recorder(L.Callback):
    """Each training step's loss, as the step returned it."""

    def __init__(self) -> None:
        self.loss: dict[int, float] = {}

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.loss[trainer.global_step - 1] = float(outputs["loss"])  # global_step has moved past this step


def test_each_metrics_row_holds_the_figures_of_the_step_it_names(tmp_path: Path):
    """Lightning writes logged values when (step + 1) % log_every_n_steps == 0, under that step: a value logged at
    another step would sit in a later step's row. Every train row's loss and tokens seen are its own step's, and
    every row has tokens/s, also when each logging step is followed by a validation (its time is left out)."""
    import csv

    from lightning.pytorch.loggers import CSVLogger

    rec = Recorder()
    lit = LitDecoder(_model(), OptimConfig(warmup_steps=0), np.ones(V), max_steps=12, log_every=3)
    trainer = L.Trainer(max_steps=12, logger=CSVLogger(tmp_path, name="", version=""), log_every_n_steps=3,
                        val_check_interval=3, check_val_every_n_epoch=None, num_sanity_val_steps=0,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        accelerator="cpu", devices=1, callbacks=[rec])
    trainer.fit(lit, train_dataloaders=_loader(), val_dataloaders=_loader(8))
    with open(tmp_path / "metrics.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["train/loss"]]
    assert [int(r["step"]) for r in rows] == [2, 5, 8, 11]
    for r in rows:
        step = int(r["step"])
        assert float(r["tokens_seen"]) == (step + 1) * 4 * T  # batch 4 x T tokens per step, steps 0..step
        assert float(r["train/loss"]) == pytest.approx(rec.loss[step], rel=1e-6)
        assert float(r["train/tokens_per_s"]) > 0



def test_a_run_shorter_than_log_every_keeps_its_final_train_loss(tmp_path: Path):
    """The last step logs too: the summary's train loss is the last step's; no row is written under a wrong step."""
    import csv

    from lightning.pytorch.loggers import CSVLogger

    rec = Recorder()
    lit = LitDecoder(_model(), OptimConfig(warmup_steps=0), np.ones(V), max_steps=4, log_every=10)
    trainer = L.Trainer(max_steps=4, logger=CSVLogger(tmp_path, name="", version=""), log_every_n_steps=10,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        accelerator="cpu", devices=1, callbacks=[rec])
    trainer.fit(lit, train_dataloaders=_loader())
    assert float(trainer.callback_metrics["train/loss"]) == pytest.approx(rec.loss[3], rel=1e-6)
    path = tmp_path / "metrics.csv"
    rows = [r for r in csv.DictReader(open(path)) if r.get("train/loss")] if path.exists() else []
    assert all(int(r["step"]) == 3 for r in rows)  # if Lightning writes the last step, then under its own number
