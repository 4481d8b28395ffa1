"""The seed's argument, on a real model: without a positional encoding a permuted prefix is indistinguishable.

Precisely: a causal decoder's last position sees its own token and the *set* of earlier tokens. So the claim holds
for a permuted prefix read by the same last token ("我爱你" + "爱" vs "你爱我" + "爱"), and in one layer: from
the second layer on, the causal mask itself leaks order (position i has seen i tokens; Haviv et al. 2022,
https://arxiv.org/abs/2203.16634). Both caveats are tested too, so nobody "simplifies" the test into a false one.
"""

from __future__ import annotations

import pytest
import torch

from decoderlab.components.positional import POSITIONAL
from decoderlab.components.tokenizers import TOKENIZERS
from decoderlab.model import Decoder, ModelConfig
from decoderlab.plugins import load_plugins

load_plugins()
ENCODINGS = [n for n in POSITIONAL.names() if n != "none"]
PROBE = "爱"  # the token read at the last position, the same in both sequences


def tokenizer():
    tok = TOKENIZERS.build({"name": "char"})
    tok.fit(["我爱你"])
    return tok


def last_logits(positional: str, texts: list[str], n_layers: int = 1) -> list[torch.Tensor]:
    """Logits at the last position of each text, from one tiny model with non-trivial (perturbed) weights."""
    tok = tokenizer()
    torch.manual_seed(0)
    cfg = ModelConfig(n_layers=n_layers, n_heads=2, d_model=16, block_size=8, positional={"name": positional})
    model = Decoder(cfg, tok.vocab_size).double().eval()
    with torch.no_grad():
        for p in model.parameters():  # like a trained model: no zero-initialized table stays zero
            p.add_(torch.randn_like(p) * 0.2)
        return [model(torch.as_tensor(tok.encode(t))[None])[0, -1] for t in texts]


def test_nope_cannot_tell_a_permuted_prefix():
    a, b = last_logits("none", ["我爱你" + PROBE, "你爱我" + PROBE])
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("positional", ENCODINGS)
def test_positional_encoding_tells_a_permuted_prefix(positional):
    a, b = last_logits(positional, ["我爱你" + PROBE, "你爱我" + PROBE])
    assert (a - b).abs().max().item() > 1e-6, f"{positional} cannot tell 我爱你 from 你爱我"


def test_nope_still_sees_its_own_token():
    """"我爱你" vs "你爱我" end in different tokens: their last logits differ even without positions."""
    a, b = last_logits("none", ["我爱你", "你爱我"])
    assert (a - b).abs().max().item() > 1e-6


def test_nope_causal_mask_leaks_order_from_two_layers():
    a, b = last_logits("none", ["我爱你" + PROBE, "你爱我" + PROBE], n_layers=2)
    assert (a - b).abs().max().item() > 1e-6
