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
    RANGES = {"scale": "(-inf, inf)"}
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


# --- pictures of trained models: --run, captions that say initial / fixed / trained -------------------------------

def _captured(monkeypatch) -> list:
    """Figures passed to decoderlab.plot._save (title and panels readable before they are closed)."""
    import decoderlab.plot as plot

    figs, save = [], plot._save

    def keep(fig, path):
        figs.append((fig.texts[0].get_text() if fig.texts else fig._suptitle.get_text(),
                     [im.get_array() for ax in fig.axes for im in ax.get_images()],
                     [ln.get_ydata() for ax in fig.axes for ln in ax.get_lines()]))
        return save(fig, path)

    monkeypatch.setattr(plot, "_save", keep)
    return figs


def _trained_checkpoint(tmp_path: Path, positional: dict, seed: int = 3) -> Path:
    """A checkpoint of a model whose parameters moved away from their init (what training does)."""
    from decoderlab.checkpoint import seal, write_checkpoint
    from decoderlab.components.tokenizers import TOKENIZERS
    from decoderlab.model import Decoder, ModelConfig

    tok = TOKENIZERS.build({"name": "byte"})
    torch.manual_seed(seed)
    model = Decoder(ModelConfig(n_layers=1, n_heads=2, d_model=16, block_size=16, positional=positional), 256)
    with torch.no_grad():
        for p in model.positional.parameters():
            p.add_(torch.randn_like(p))
    path = write_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt", model, tok)
    ckpt = torch.load(path, weights_only=True)
    torch.save(seal({**ckpt, "global_step": 6}), path)  # as Lightning records it (sealed: it is training state)
    return path


@pytest.mark.parametrize("name, state", [("learned", "initial"), ("t5", "initial"), ("alibi", "fixed"),
                                         ("rope", "fixed"), ("sinusoidal", "fixed")])
def test_captions_say_initial_or_fixed_without_a_run(name, state, tmp_path, monkeypatch):
    figs = _captured(monkeypatch)
    main(["--out", str(tmp_path), *SMALL, name])
    title = figs[0][0]
    assert f"model/positional={name}, {state}" in title and "trained (" not in title


def test_run_draws_the_trained_learned_table(tmp_path, monkeypatch):
    from decoderlab.plot import cosine_similarity

    ckpt = _trained_checkpoint(tmp_path, {"name": "learned"})
    figs = _captured(monkeypatch)
    main(["--run", str(ckpt.parent.parent), "--out", str(tmp_path / "figs")])
    assert_png(tmp_path / "figs" / "run_positional_learned.png")
    title, images, _ = figs[0]
    assert "trained (" in title and "step 6" in title and "initial" not in title
    wpe = torch.load(ckpt, weights_only=True)["state_dict"]["model.positional.wpe.weight"]
    sim = cosine_similarity(wpe).numpy()
    assert any(im.shape == sim.shape and abs(im - sim).max() < 1e-6 for im in images)  # the run's own table


@pytest.mark.parametrize("positional", [{"name": "t5"}, {"name": "alibi"}])
def test_run_draws_bias_by_distance_per_head(positional, tmp_path, monkeypatch):
    from decoderlab.export import load_model
    from decoderlab.plot import bias_by_distance

    ckpt = _trained_checkpoint(tmp_path, positional)
    figs = _captured(monkeypatch)
    main(["--run", str(ckpt), "--out", str(tmp_path / "figs")])
    _, _, lines = figs[0]
    pe = load_model(ckpt)[0].positional
    expected = bias_by_distance(pe, 16)  # (H, T)
    for h in range(2):
        assert any(len(y) == 16 and abs(y - expected[h].numpy()).max() < 1e-6 for y in lines)
    if positional["name"] == "alibi":  # ALiBi's bias is -slope * distance: the lines' gradients are the slopes
        from decoderlab.components.positional.alibi import alibi_slopes

        slopes = torch.as_tensor(alibi_slopes(2), dtype=torch.float64)
        torch.testing.assert_close(expected, -slopes[:, None] * torch.arange(16.0, dtype=torch.float64))


def test_run_draws_rope_score_vs_distance(tmp_path, monkeypatch):
    ckpt = _trained_checkpoint(tmp_path, {"name": "rope", "base": 100.0})
    figs = _captured(monkeypatch)
    main(["--run", str(ckpt), "--out", str(tmp_path / "figs")])
    title, _, lines = figs[0]
    assert "trained (" in title
    assert lines and abs(lines[0][0] - 1.0) < 1e-9  # aligned q.k at distance 0


def test_run_bad_path_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--run", str(tmp_path / "nope")])
    assert e.value.code == 2 and "no such run directory" in capsys.readouterr().err


@pytest.mark.slow
def test_run_of_a_real_training_through_the_cli(tmp_path, monkeypatch):
    from conftest import TINY, run_cli

    run = tmp_path / "run"
    out = run_cli(["decoderlab-train", *TINY, f"hydra.run.dir={run}", "logger=csv", "model/positional=t5"],
                  cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    figs = _captured(monkeypatch)
    main(["--run", str(run), "--out", str(tmp_path / "figs")])
    assert_png(tmp_path / "figs" / "run_positional_t5.png")
    assert "trained (" in figs[0][0] and "step 6" in figs[0][0]
