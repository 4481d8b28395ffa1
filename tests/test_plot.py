"""``decoderlab-plot``: a non-empty PNG for every registered positional encoding (plugins' included), the overview
figures, a clean exit, and a clear error for an unknown name."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import decoderlab
from decoderlab.components.positional import POSITIONAL, Positional
from decoderlab.plot import main
from decoderlab.plugins import load_plugins
from decoderlab.registry import ComponentConfig

load_plugins()  # plugin encodings are parametrized like core ones

PNG = b"\x89PNG\r\n\x1a\n"
SMALL = ["--d-model", "16", "--n-heads", "2", "--length", "16"]


def assert_png(path):
    assert path.is_file(), f"{path} was not written"
    data = path.read_bytes()
    assert data.startswith(PNG) and len(data) > 2000, f"{path} is not a non-empty PNG"


@pytest.mark.parametrize("name", POSITIONAL.names())
def test_every_registered_encoding_gets_a_figure(name, tmp_path):
    main(["--out", str(tmp_path), *SMALL, name])
    assert_png(tmp_path / f"positional_{name}.png")
    assert [p.name for p in tmp_path.iterdir()] == [f"positional_{name}.png"]  # names select: nothing else


@dataclass
class _EveryHookConfig(ComponentConfig):
    scale: float = 0.5


class _EveryHook(Positional):
    """A test-only encoding that uses all three hooks, as a plugin might (no flags: overriding is enough)."""

    def __init__(self, cfg: _EveryHookConfig, dims):
        super().__init__()
        self.scale = cfg.scale

    def embed(self, x, start):
        pos = torch.arange(start, start + x.shape[1])
        return x + self.scale * pos[:, None].to(x.dtype)

    def rotate(self, q, k, start):
        return q.flip(-1), k

    def bias(self, t_q, t_k):
        q_pos, k_pos = torch.arange(t_k - t_q, t_k), torch.arange(t_k)
        return -(q_pos[:, None] - k_pos[None, :]).abs()[None, None].float().expand(1, 2, -1, -1)


def test_a_new_encoding_is_drawn_through_the_same_path(tmp_path):
    POSITIONAL.register("_plot_test_every_hook", _EveryHookConfig)(_EveryHook)
    try:
        main(["--out", str(tmp_path), *SMALL, "_plot_test_every_hook"])
    finally:
        POSITIONAL.unregister("_plot_test_every_hook")
    assert_png(tmp_path / "positional__plot_test_every_hook.png")


def test_no_names_writes_the_overview_and_every_encoding(tmp_path):
    main(["--out", str(tmp_path), *SMALL])
    for stem in ("sinusoidal_pe", "rope_distance", "alibi_bias", "t5_buckets"):
        assert_png(tmp_path / f"{stem}.png")
    for name in POSITIONAL.names():
        assert_png(tmp_path / f"positional_{name}.png")


def test_unknown_name_is_a_clear_error_listing_valid_ones(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--out", str(tmp_path), "rope", "ropee"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "unknown model/positional 'ropee'" in err
    assert "Valid names: " + ", ".join(POSITIONAL.names()) in err
    assert not tmp_path.exists() or not any(tmp_path.iterdir())  # nothing written before the error


def test_command_line_exits_zero(tmp_path):
    out = tmp_path / "figs"
    src = str(Path(decoderlab.__file__).resolve().parents[1])  # the same code this test process imported
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, (src, os.environ.get("PYTHONPATH")))))
    proc = subprocess.run([sys.executable, "-m", "decoderlab.plot", "--out", str(out), *SMALL, "alibi"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert_png(out / "positional_alibi.png")
    assert "positional_alibi.png" in proc.stderr + proc.stdout


def test_rotated_score_matrix_is_one_on_the_diagonal_and_toeplitz():
    from decoderlab.plot import build_positional, rotated_scores

    s = rotated_scores(build_positional("rope", 16, 2, 32), 8, 32)  # (T, T)
    assert s.shape == (32, 32) and torch.allclose(s.diagonal(), torch.ones(32, dtype=s.dtype))
    torch.testing.assert_close(s[5:, 5:], s[:-5, :-5])  # a function of m - n: what the curve panel draws
    assert (s[1:, 0] < 1).all()
