"""decoderlab-export --format hf: the transformers model loaded back gives decoderlab's logits and greedy text.

Tiny random models (no download), float32: max |logits diff| <= 1e-4 and identical greedy generations, for each
family with a transformers equivalent (GPT-2, GPT-1, Llama with RoPE in both layouts, scalings and GQA), through the
real CLI for one of them; anything else is refused with one line naming the component.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from decoderlab.checkpoint import write_checkpoint  # noqa: E402
from decoderlab.components.tokenizers import TOKENIZERS  # noqa: E402
from decoderlab.export import ExportError, export_hf, family_of, from_hf, main, to_hf  # noqa: E402
from decoderlab.model import Decoder, ModelConfig  # noqa: E402

TEXT = "the quick brown fox jumps over the lazy dog. 天下大势，分久必合。\n"
T, D, H, L = 32, 32, 4, 2
TOL = 1e-4


def tokenizer():
    tok = TOKENIZERS.build({"name": "char", "unknown": "unk"})
    tok.fit([TEXT])
    return tok


def perturbed(cfg: ModelConfig, vocab: int, seed: int = 0) -> Decoder:
    """A model whose every parameter (norm gains and biases too) is far from its init."""
    torch.manual_seed(seed)
    model = Decoder(cfg, vocab)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return model.eval()


def gpt(placement: str, **kw) -> ModelConfig:
    base = dict(n_layers=L, n_heads=H, d_model=D, block_size=T, positional={"name": "learned"},
                placement={"name": placement}, norm={"name": "layernorm"}, ffn={"name": "mlp"})
    return ModelConfig(**{**base, **kw})


def llama(**pos) -> ModelConfig:
    return ModelConfig(n_layers=L, n_heads=H, d_model=D, block_size=T, tie_embeddings=False,
                       positional={"name": "rope", **pos}, attention={"name": "mha", "n_kv_heads": 2},
                       placement={"name": "pre"}, norm={"name": "rmsnorm"}, ffn={"name": "swiglu"})


CASES = {
    "gpt2": (gpt("pre", bias=True), "gpt2"),
    "gpt2-nobias-untied-relu": (gpt("pre", tie_embeddings=False, ffn={"name": "mlp", "activation": "relu"},
                                    norm={"name": "layernorm", "bias": False}), "gpt2"),
    "gpt1": (gpt("post", bias=True), "openai-gpt"),
    "llama-complex": (llama(), "llama"),
    "llama-rotate_half-bias": (ModelConfig(**{**vars(llama(impl="rotate_half")), "bias": True,
                                              "tie_embeddings": True}), "llama"),
    "llama-linear": (llama(scaling="linear", factor=2.0), "llama"),
    "llama-ntk": (llama(scaling="ntk", factor=4.0, base=500.0), "llama"),
    "llama-yarn": (llama(scaling="yarn", factor=4.0, original_max_positions=16), "llama"),
}


def assert_same(model: Decoder, hf, tok) -> None:
    ids = torch.as_tensor(tok.encode(TEXT[:T]))[None]  # (1, T)
    with torch.no_grad():
        ours, theirs = model(ids), hf(input_ids=ids).logits
    assert ours.shape == theirs.shape
    diff = (ours - theirs).abs().max().item()
    assert diff <= TOL, f"max |logits diff| = {diff:.3g}"
    assert theirs.std().item() > 0.1  # not two near-constant outputs
    prompt = ids[:, :8]
    mine = model.generate(prompt, max_new_tokens=16, top_k=1)
    their = hf.generate(prompt, max_new_tokens=16, do_sample=False, pad_token_id=0, attention_mask=None)
    assert mine.tolist() == their.tolist()


@pytest.mark.parametrize("case", list(CASES))
def test_export_loads_in_transformers_with_same_logits_and_greedy_text(tmp_path, case):
    cfg, family = CASES[case]
    tok = tokenizer()
    model = perturbed(cfg, tok.vocab_size)
    assert family_of(model) == family
    export_hf(model, tok, tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    assert hf.config.model_type == family
    assert_same(model, hf, tok)
    auto = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert auto.encode(TEXT, add_special_tokens=False) == tok.encode(TEXT).tolist()
    assert auto.decode(tok.encode(TEXT).tolist()) == TEXT


def test_to_hf_and_from_hf_are_inverse():
    for cfg, family in CASES.values():
        model = perturbed(cfg, 40)
        back = from_hf(model, family, to_hf(model, family))
        state = model.state_dict()
        assert set(back) == set(state)
        for k, v in back.items():
            assert torch.equal(v, state[k]), k


def test_cli_exports_a_checkpoint(tmp_path):
    tok = tokenizer()
    model = perturbed(llama(), tok.vocab_size)
    ckpt = write_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt", model, tok)
    assert main([str(ckpt.parent.parent), "--format", "hf", str(tmp_path / "out")]) == 0
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype=torch.float32).eval()
    assert_same(model, hf, tok)


def test_cli_names_a_missing_source_and_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path / "nowhere"), str(tmp_path / "out")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nowhere" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("overrides, named", [
    ({"positional": {"name": "alibi"}}, "model/positional=alibi"),
    ({"positional": {"name": "rope", "fraction": 0.5}}, "model/positional=rope fraction=0.5"),
    ({"placement": {"name": "sandwich"}}, "model/placement=sandwich"),
    ({"norm": {"name": "rmsnorm"}}, "model/norm=rmsnorm"),
    ({"ffn": {"name": "geglu"}}, "model/ffn=geglu"),
    ({"ffn": {"name": "mlp", "activation": "relu2"}}, "model/ffn=mlp activation=relu2"),
    ({"attention": {"name": "mha", "qk_norm": True}}, "model/attention=mha (qk_norm=True)"),
    ({"attention": {"name": "mha", "n_kv_heads": 2}}, "model/attention=mha n_kv_heads=2"),
])
def test_unsupported_components_are_named(overrides, named, tmp_path):
    model = Decoder(gpt(overrides.pop("placement", {"name": "pre"})["name"], **overrides), 20)
    with pytest.raises(ExportError, match=f"^cannot export: {named.replace('(', '.').replace(')', '.')}") as e:
        export_hf(model, tokenizer(), tmp_path)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "model.safetensors").exists()


def _saved_run(tmp_path):
    tok = tokenizer()
    return write_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt", perturbed(gpt("pre"), tok.vocab_size),
                            tok).parent.parent


@pytest.mark.parametrize("out, said", [("afile", "afile is a file, not a directory"),
                                       ("afile/sub", "afile is a file, so {tmp}/afile/sub cannot be a directory")])
def test_an_output_path_that_cannot_be_a_directory_is_one_line_naming_it(tmp_path, capsys, out, said):
    run = _saved_run(tmp_path)
    (tmp_path / "afile").write_text("keep me")
    with pytest.raises(SystemExit) as e:
        main([str(run), str(tmp_path / out)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot export to {tmp_path / out}: ") and len(err.strip().splitlines()) == 1, err
    assert said.format(tmp=tmp_path) in err
    assert (tmp_path / "afile").read_text() == "keep me"


def test_an_output_directory_that_cannot_be_written_is_one_line_naming_it(tmp_path, capsys, monkeypatch):
    """A read-only directory (simulated: tests may run as root, whom permissions do not stop)."""
    run = _saved_run(tmp_path)

    def refuse(self, path, *a, **k):
        raise PermissionError(13, "Permission denied", str(Path(path) / "config.json"))

    monkeypatch.setattr(transformers.PreTrainedModel, "save_pretrained", refuse)
    with pytest.raises(SystemExit) as e:
        main([str(run), str(tmp_path / "ro")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.strip() == f"error: cannot export to {tmp_path / 'ro'}: Permission denied ({tmp_path / 'ro'}/config.json)"


@pytest.mark.parametrize("content", ["object", "pickle", "text"])
def test_a_file_that_is_not_a_checkpoint_is_one_line_naming_it(tmp_path, capsys, content):
    import pickle

    bad = tmp_path / "bad.ckpt"
    if content == "object":
        torch.save({"state_dict": {}, "x": object}, bad)
    elif content == "pickle":
        bad.write_bytes(pickle.dumps({"a": 1}, protocol=4))
    else:
        bad.write_text("hello world\n")
    with pytest.raises(SystemExit):
        main([str(bad), str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot load checkpoint {bad} (corrupt or not a checkpoint): ")
    assert len(err.strip().splitlines()) == 1, err
    assert "weights_only" not in err and "Warning" not in err
    if content == "text":  # torch's own reason for a file that is no archive is a bare "KeyError: '101'"
        assert err.strip().endswith("not a torch.save archive (truncated, or another kind of file)")
    assert not (tmp_path / "out").exists()
