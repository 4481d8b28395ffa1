"""The Lightning data module: random training windows, sequential validation windows.

The training batch order is a pure function of (seed, step): step ``s`` draws ``batch_size * world_size``
window offsets from a generator seeded with (seed, s), and rank ``r`` takes its slice. A run resumed at step
``k`` therefore sees exactly the batches an uninterrupted run sees from step ``k``, ranks never share a window
within a step, and no sampler state needs saving.
"""

from __future__ import annotations

from collections.abc import Iterator

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Subset

from decoderlab.data.cache import TokenizedCorpus


def train_batch_offsets(seed: int, step: int, n_tokens: int, block_size: int, batch_size: int,
                        rank: int = 0, world_size: int = 1) -> np.ndarray:
    """Start offsets of the windows of rank ``rank`` at micro-step ``step``; shape (batch_size,)."""
    rng = np.random.Generator(np.random.Philox(key=[seed, step]))
    starts = rng.integers(0, n_tokens - block_size, size=batch_size * world_size)  # window = block_size + 1
    return starts[rank * batch_size:(rank + 1) * batch_size]


def _distributed() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class TrainWindows(IterableDataset):
    """Endless stream of (x, y) batches from random windows, starting at micro-step ``start_step``."""

    def __init__(self, ids: np.ndarray, block_size: int, batch_size: int, seed: int):
        self.ids, self.block_size, self.batch_size, self.seed = ids, block_size, batch_size, seed
        self.start_step = 0

    def batch(self, step: int, rank: int = 0, world_size: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        T = self.block_size
        offsets = train_batch_offsets(self.seed, step, len(self.ids), T, self.batch_size, rank, world_size)
        w = np.stack([self.ids[o:o + T + 1] for o in offsets]).astype(np.int64)  # (B, T + 1)
        w = torch.from_numpy(w)
        return w[:, :-1], w[:, 1:]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        rank, world = _distributed()
        step = self.start_step
        while True:
            yield self.batch(step, rank, world)
            step += 1


class ValWindows(Dataset):
    """Consecutive windows over the validation ids; each held-out token is a target exactly once.

    Window i covers ids[i*T : i*T + T + 1]; the last window is moved back to end at the last id, and targets
    it shares with the previous window are set to -100 (ignored). ``max_windows`` keeps that many evenly
    spaced windows.
    """

    def __init__(self, ids: np.ndarray, block_size: int, max_windows: int | None = None):
        self.ids, self.T = ids, block_size
        n_targets = len(ids) - 1
        n = max(1, -(-n_targets // block_size))  # ceil
        self.starts = [min(i * block_size, max(0, n_targets - block_size)) for i in range(n)]
        self.skip = [0] * n
        if n > 1:
            self.skip[-1] = (n - 1) * block_size - self.starts[-1]  # targets already covered by window n-2
        keep = range(n) if not max_windows or max_windows >= n else np.linspace(0, n - 1, max_windows).round()
        self.index = sorted({int(i) for i in keep})

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        j = self.index[i]
        s = self.starts[j]
        w = torch.from_numpy(np.asarray(self.ids[s:s + self.T + 1]).astype(np.int64))
        x, y = w[:-1].clone(), w[1:].clone()
        if len(x) < self.T:  # a validation split shorter than one block: pad, ignore the padding
            pad = self.T - len(x)
            x = torch.cat((x, torch.zeros(pad, dtype=torch.long)))
            y = torch.cat((y, torch.full((pad,), -100, dtype=torch.long)))
        y[: self.skip[j]] = -100
        return x, y


class DecoderDataModule(L.LightningDataModule):
    def __init__(self, data: TokenizedCorpus, block_size: int, batch_size: int, eval_batch_size: int,
                 seed: int, val_max_windows: int | None = None):
        super().__init__()
        self.data = data
        self.train_set = TrainWindows(data.train, block_size, batch_size, seed)
        self.val_set = ValWindows(data.val, block_size, val_max_windows)
        self.eval_batch_size = eval_batch_size
        self.val_sample_windows: int | None = None  # set by the run (trainer.val_sample_windows)

    def val_is_sampled(self) -> bool:
        """True if validations during ``fit`` score a sample of the windows (the final one then scores all)."""
        return bool(self.val_sample_windows) and self.val_sample_windows < len(self.val_set)

    def _loader_kwargs(self) -> dict:
        # A private generator: creating an iterator draws a seed from it, not from the global RNG, so a resume
        # (which creates iterators at other moments) never shifts the global RNG. Pinned memory on CUDA: Lightning
        # then copies each batch to the device with non_blocking=True.
        cuda = self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"
        return {"num_workers": 0, "generator": torch.Generator(), "pin_memory": cuda}

    def train_dataloader(self) -> DataLoader:
        # Resume: continue the pure (seed, step) stream at the restored step.
        if self.trainer is not None:
            self.train_set.start_step = self.trainer.global_step * self.trainer.accumulate_grad_batches
        return DataLoader(self.train_set, batch_size=None, **self._loader_kwargs())

    def val_dataloader(self) -> DataLoader:
        # DDP: each rank scores its own windows; the summed metrics are reduced across ranks, so nothing is
        # counted twice (a DistributedSampler would pad with repeated windows).
        # During fit (intermediate validations) a fixed, evenly spaced sample when val_sample_windows is set.
        rank, world = _distributed()
        index = range(len(self.val_set))
        if self.val_is_sampled() and self.trainer is not None and self.trainer.state.fn == "fit":
            index = sorted({int(i) for i in np.linspace(0, len(self.val_set) - 1, self.val_sample_windows).round()})
        val = Subset(self.val_set, index[rank::world])
        return DataLoader(val, batch_size=self.eval_batch_size, shuffle=False, **self._loader_kwargs())
