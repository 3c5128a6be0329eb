import copy

import pytest
import torch
from torch import nn

from trainers import techniques
from trainers.attention import Attention, Encoder, EncoderLayer, rewrite_attention


def _encoder(batch_first, norm_first=False, activation="gelu"):
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(
        16, 4, 32, dropout=0.0, activation=activation, batch_first=batch_first, norm_first=norm_first
    )
    return nn.Sequential(nn.TransformerEncoder(layer, 2, norm=nn.LayerNorm(16), enable_nested_tensor=False))


def _rewritten(model):
    plain = copy.deepcopy(model)
    rewrite_attention(plain)
    return plain


PADDING = torch.tensor([[False] * 5, [False] * 3 + [True] * 2, [False] * 4 + [True]])
CAUSAL = nn.Transformer.generate_square_subsequent_mask(5)
MASKS = {
    "none": {},
    "key padding": {"src_key_padding_mask": PADDING},
    "causal float": {"mask": CAUSAL},
    "causal hint": {"mask": CAUSAL, "is_causal": True},
    # True = may not attend; fixed (not drawn) so that no row is masked whole, which is NaN in torch's own
    "bool": {"mask": (torch.arange(5)[:, None] - torch.arange(5)[None, :]) % 3 == 1},
}


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("masks", list(MASKS))
def test_rewritten_encoder_computes_what_torch_computes(batch_first, norm_first, training, masks):
    model = _encoder(batch_first, norm_first).train(training)
    plain = _rewritten(model)
    x = torch.randn(3, 5, 16)
    if not batch_first:
        x = x.transpose(0, 1)
    with torch.no_grad():
        expected, got = model[0](x, **MASKS[masks]), plain[0](x, **MASKS[masks])
    assert isinstance(plain[0], Encoder) and isinstance(plain[0].layers[0], EncoderLayer)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_rewritten_encoder_trains_to_the_same_gradients():
    model = _encoder(batch_first=True, activation="relu").train()
    plain = _rewritten(model)
    x = torch.randn(3, 5, 16)
    model[0](x).square().sum().backward()
    plain[0](x).square().sum().backward()
    fused_grad = model[0].layers[0].self_attn.in_proj_weight.grad
    plain_attention = plain[0].layers[0].self_attn
    plain_grad = torch.cat([plain_attention.q_proj.weight.grad, plain_attention.k_proj.weight.grad, plain_attention.v_proj.weight.grad])
    torch.testing.assert_close(plain_grad, fused_grad, atol=1e-5, rtol=1e-4)
    assert isinstance(plain[0].layers[0].activation, nn.ReLU)


@pytest.mark.parametrize("average", [True, False])
def test_attention_returns_the_same_weights_with_other_key_and_value_sizes(average):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 4, kdim=8, vdim=12)
    plain = Attention(mha)
    q, k, v = torch.randn(5, 2, 16), torch.randn(7, 2, 8), torch.randn(7, 2, 12)
    per_head_mask = torch.rand(2 * 4, 5, 7) > 0.7
    expected = mha(q, k, v, attn_mask=per_head_mask, average_attn_weights=average)
    got = plain(q, k, v, attn_mask=per_head_mask, average_attn_weights=average)
    torch.testing.assert_close(got[0], expected[0], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(got[1], expected[1], atol=1e-6, rtol=1e-5)
    unbatched = plain(q[:, 0], k[:, 0], v[:, 0])
    torch.testing.assert_close(unbatched[0], mha(q[:, 0], k[:, 0], v[:, 0])[0], atol=1e-6, rtol=1e-5)


def test_attention_refuses_what_it_does_not_compute():
    with pytest.raises(ValueError, match="add_bias_kv"):
        Attention(nn.MultiheadAttention(16, 4, add_bias_kv=True))


def test_build_rewrites_attention_only_for_techniques_that_need_it():
    untouched = _encoder(batch_first=True)
    notes = techniques.build(untouched, techniques.techniques_from_choices({"weight_decay": 1e-4}))
    assert isinstance(untouched[0], nn.TransformerEncoder) and "attention_rewritten" not in notes
    model = _encoder(batch_first=True)
    notes = techniques.build(model, techniques.techniques_from_choices({"rank": 2}))
    assert notes["attention_rewritten"].split(",")[-1] == "0"
    assert "0.layers.0.self_attn.q_proj" in notes["low_rank_factorised"].split(",")
    assert isinstance(model[0].layers[0].self_attn.out_proj, nn.Sequential)
    model.eval()(torch.randn(2, 5, 16))  # the factorised projections are called, not read
