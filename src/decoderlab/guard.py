"""Divergence guard: a non-finite loss or gradient norm never reaches the weights.

The verdict is kept on the device (a few tensor ops per step, no host sync): a fused AdamW skips the update itself
when its ``found_inf`` flag is set (the hook GradScaler uses), and the host reads the verdict only where it syncs
anyway (logging points, checkpoint saves, the end of training).
"""

from __future__ import annotations

import torch

from decoderlab.errors import UserError

MODES = ("stop", "skip")
WHAT = {1: "loss", 2: "gradient norm", 3: "loss and gradient norm"}


class NonFiniteError(UserError):
    """Training diverged: a non-finite loss or gradient norm (the run ends ``failed``)."""


class NonFiniteGuard:
    """Judges each optimizer step; ``stop`` halts at the first bad step, ``skip`` after ``limit`` in a row.

    After a halt every further update is skipped too (``flag`` latches), so the weights stay those before the
    first bad step until the host reads the verdict and ends the run.
    """

    def __init__(self, mode: str, limit: int):
        if mode not in MODES:
            raise UserError(f"trainer.on_nonfinite must be one of {', '.join(MODES)}, got {mode!r}")
        if limit < 1:
            raise UserError(f"trainer.max_nonfinite_in_a_row must be >= 1, got {limit}")
        self.mode, self.limit = mode, 1 if mode == "stop" else limit
        self.device: torch.device | None = None

    def _ensure(self, device: torch.device) -> None:
        if self.device == device:
            return
        if self.device is not None:  # moved (e.g. restored on the CPU, trained on a GPU): keep the counts
            for k in ("bad_loss", "halted", "run", "skipped", "what", "halt_step", "flag"):
                setattr(self, k, getattr(self, k).to(device))
            self.device = device
            return
        self.device = device
        z = torch.zeros((), dtype=torch.long, device=device)
        self.bad_loss, self.halted = z.bool(), z.bool()
        self.run, self.skipped, self.what, self.halt_step = z.clone(), z.clone(), z.clone(), z - 1
        self.flag = z.float()  # AdamW(fused=True).found_inf: 1.0 skips the whole update, step count included

    def see_loss(self, loss: torch.Tensor) -> None:
        """Record a micro-batch's loss (several per step under gradient accumulation)."""
        self._ensure(loss.device)
        self.bad_loss |= ~torch.isfinite(loss.detach())

    def judge(self, norm: torch.Tensor | None, step: int) -> torch.Tensor:
        """The skip flag of this optimizer step (a device tensor; 1.0 = skip). ``norm=None``: loss only."""
        self._ensure(norm.device if norm is not None else self.device or torch.device("cpu"))
        bad_norm = ~torch.isfinite(norm) if norm is not None else torch.zeros_like(self.bad_loss)
        bad = self.bad_loss | bad_norm
        self.run = torch.where(bad, self.run + 1, 0)
        newly = ~self.halted & (self.run >= self.limit)
        self.halt_step = torch.where(newly, step, self.halt_step)
        self.what = torch.where(newly, self.bad_loss.long() + 2 * bad_norm.long(), self.what)
        self.halted = self.halted | newly
        self.skipped = self.skipped + bad.long()
        self.flag.copy_(bad | self.halted)
        self.bad_loss = torch.zeros_like(self.bad_loss)
        return self.flag

    def check(self, last_checkpoint: str | None = None) -> None:
        """Raise :class:`NonFiniteError` if the run must stop (one host sync)."""
        if self.device is None or not bool(self.halted):
            return
        step, what = int(self.halt_step), WHAT.get(int(self.what), "value")
        kept = f"last finite checkpoint: {last_checkpoint}" if last_checkpoint else "no checkpoint was written"
        if self.mode == "stop":
            why = f"non-finite {what} at step {step} (trainer.on_nonfinite=stop)"
        else:
            why = (f"{self.limit} non-finite updates in a row, the last at step {step} ({what}; "
                   f"trainer.max_nonfinite_in_a_row={self.limit})")
        raise NonFiniteError(f"training diverged: {why}; the update was not applied, {kept}")

    def state(self) -> dict[str, int]:
        if self.device is None:
            return {"nonfinite_skipped": 0, "nonfinite_run": 0}
        return {"nonfinite_skipped": int(self.skipped), "nonfinite_run": int(self.run)}

    def load(self, state: dict[str, int], device: torch.device) -> None:
        self._ensure(device)
        self.skipped.fill_(int(state.get("nonfinite_skipped", 0)))
        self.run.fill_(int(state.get("nonfinite_run", 0)))


def all_finite(tensors: list[torch.Tensor]) -> bool:
    """True if every element of every tensor is finite (one host sync)."""
    return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all()) if tensors else True
