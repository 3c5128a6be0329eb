"""Rewrite torch's fused attention modules into plain ones whose projections are ordinary nn.Linear.

`nn.MultiheadAttention` keeps its q/k/v projections as one `in_proj_weight` tensor and reads
`out_proj.weight` directly in `F.multi_head_attention_forward`; `nn.TransformerEncoderLayer` and
`nn.TransformerEncoder` read those tensors (and `linear1.weight`, ...) in their inference fast path.
A technique that replaces a Linear by another module (two low-rank factors, an int8 or sparse
layer) therefore crashes them, and one that looks for nn.Linear modules never sees q, k and v.
`rewrite_attention` swaps each for an equivalent module (`Attention`, `EncoderLayer`, `Encoder`)
that computes the same outputs from explicit `q_proj`, `k_proj`, `v_proj`, `out_proj` Linear
layers with `F.scaled_dot_product_attention`, and that calls its submodules, never their weights.
The technique build phase runs it first whenever a technique that needs it is active
(`Technique.needs_explicit_attention`).
"""

import logging

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

_ACTIVATION_MODULES = {F.relu: nn.ReLU, F.gelu: nn.GELU}


class Attention(nn.Module):
    """nn.MultiheadAttention computed from four plain Linear projections (same call, same outputs).

    Takes the arguments nn.MultiheadAttention.forward takes (query, key, value, key_padding_mask,
    need_weights, attn_mask, average_attn_weights, is_causal), batch first or not, batched or not,
    boolean (True = masked out) or float (added) masks, and returns (output, weights or None).
    Attention dropout acts in training mode only, as in torch.

    Args:
        attention: the nn.MultiheadAttention to copy (its weights are copied, not shared);
            add_bias_kv and add_zero_attn are refused with ValueError.

    Example:
        >>> mha = nn.MultiheadAttention(16, 4, batch_first=True).eval()
        >>> x = torch.randn(2, 5, 16)
        >>> torch.allclose(Attention(mha).eval()(x, x, x)[0], mha(x, x, x)[0], atol=1e-6)
        True
    """

    def __init__(self, attention: nn.MultiheadAttention):
        super().__init__()
        if attention.bias_k is not None or attention.add_zero_attn:
            raise ValueError("rewrite_attention: nn.MultiheadAttention with add_bias_kv or add_zero_attn is not supported")
        self.embed_dim = attention.embed_dim
        self.num_heads = attention.num_heads
        self.head_dim = attention.head_dim
        self.batch_first = attention.batch_first
        self.dropout = attention.dropout
        weights = (
            attention.in_proj_weight.chunk(3)
            if attention._qkv_same_embed_dim
            else (attention.q_proj_weight, attention.k_proj_weight, attention.v_proj_weight)
        )
        biases = (None,) * 3 if attention.in_proj_bias is None else attention.in_proj_bias.chunk(3)
        self.q_proj, self.k_proj, self.v_proj = (_linear(weight, bias) for weight, bias in zip(weights, biases))
        self.out_proj = _linear(attention.out_proj.weight, attention.out_proj.bias)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batched = query.dim() == 3
        if not batched:
            query, key, value = query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0)
            key_padding_mask = None if key_padding_mask is None else key_padding_mask.unsqueeze(0)
        elif not self.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        batch, target_length, source_length = query.shape[0], query.shape[1], key.shape[1]
        q, k, v = (
            projection(tensor).reshape(batch, -1, self.num_heads, self.head_dim).transpose(1, 2)
            for projection, tensor in ((self.q_proj, query), (self.k_proj, key), (self.v_proj, value))
        )
        mask = _additive_mask(attn_mask, key_padding_mask, batch, self.num_heads, target_length, source_length, q.dtype)
        causal = is_causal and mask is None
        dropout = self.dropout if self.training else 0.0
        if need_weights:
            scores = q @ k.transpose(-2, -1) / self.head_dim**0.5
            if causal:
                scores = scores + _additive_mask(
                    torch.ones(target_length, source_length, dtype=torch.bool, device=q.device).triu(1),
                    None, batch, self.num_heads, target_length, source_length, q.dtype,
                )
            weights = F.dropout(torch.softmax(scores if mask is None else scores + mask, dim=-1), dropout)
            heads = weights @ v
        else:
            weights = None
            heads = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=causal)
        output = self.out_proj(heads.transpose(1, 2).reshape(batch, target_length, self.embed_dim))
        if not batched:
            output = output.squeeze(0)
        elif not self.batch_first:
            output = output.transpose(0, 1)
        if weights is not None:
            weights = weights.mean(dim=1) if average_attn_weights else weights
            weights = weights if batched else weights.squeeze(0)
        return output, weights

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, batch_first={self.batch_first}"


class EncoderLayer(nn.Module):
    """nn.TransformerEncoderLayer without the fused fast path: the same submodule names and outputs,
    its submodules taken as they are (`rewrite_attention` makes `self_attn` an `Attention` first), and a functional activation (F.relu, F.gelu) made a module so that
    dropout and other module-walking techniques see it.

    Args:
        layer: the nn.TransformerEncoderLayer to copy.

    Example:
        >>> layer = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True).eval()
        >>> x = torch.randn(2, 5, 16)
        >>> torch.allclose(EncoderLayer(layer).eval()(x), layer(x), atol=1e-5)
        True
    """

    def __init__(self, layer: nn.TransformerEncoderLayer):
        super().__init__()
        self.self_attn = layer.self_attn
        self.linear1, self.dropout, self.linear2 = layer.linear1, layer.dropout, layer.linear2
        self.norm_first = layer.norm_first
        self.norm1, self.norm2 = layer.norm1, layer.norm2
        self.dropout1, self.dropout2 = layer.dropout1, layer.dropout2
        activation = layer.activation
        self.activation = _ACTIVATION_MODULES[activation]() if activation in _ACTIVATION_MODULES else activation

    def forward(
        self,
        src: torch.Tensor,
        src_mask: torch.Tensor | None = None,
        src_key_padding_mask: torch.Tensor | None = None,
        is_causal: bool = False,
    ) -> torch.Tensor:
        x = src
        if self.norm_first:
            x = x + self._attention_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal)
            return x + self._feed_forward_block(self.norm2(x))
        x = self.norm1(x + self._attention_block(x, src_mask, src_key_padding_mask, is_causal))
        return self.norm2(x + self._feed_forward_block(x))

    def _attention_block(self, x, mask, key_padding_mask, is_causal):
        attended = self.self_attn(
            x, x, x, attn_mask=mask, key_padding_mask=key_padding_mask, need_weights=False, is_causal=is_causal
        )[0]
        return self.dropout1(attended)

    def _feed_forward_block(self, x):
        return self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x)))))


class Encoder(nn.Module):
    """nn.TransformerEncoder without the nested-tensor fast path: its layers in turn, then its norm.

    Args:
        encoder: the nn.TransformerEncoder whose layers (already rewritten or not) and norm it takes.

    Example:
        >>> encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 4, batch_first=True), 2).eval()
        >>> model = nn.Sequential(encoder)
        >>> rewrite_attention(model)[-1], type(model[0]).__name__
        ('0', 'Encoder')
    """

    def __init__(self, encoder: nn.TransformerEncoder):
        super().__init__()
        self.layers = encoder.layers
        self.norm = encoder.norm

    def forward(
        self,
        src: torch.Tensor,
        mask: torch.Tensor | None = None,
        src_key_padding_mask: torch.Tensor | None = None,
        is_causal: bool | None = None,
    ) -> torch.Tensor:
        output = src
        for layer in self.layers:
            output = layer(output, src_mask=mask, src_key_padding_mask=src_key_padding_mask, is_causal=bool(is_causal))
        return output if self.norm is None else self.norm(output)


_REWRITES = ((nn.MultiheadAttention, Attention), (nn.TransformerEncoderLayer, EncoderLayer), (nn.TransformerEncoder, Encoder))


def rewrite_attention(model: nn.Module) -> list[str]:
    """Replace every nn.MultiheadAttention, nn.TransformerEncoderLayer and nn.TransformerEncoder, in place.

    Each becomes its plain equivalent (`Attention`, `EncoderLayer`, `Encoder`) computing the same
    outputs, in train and eval mode, from the same (copied) weights and keeping its training mode;
    other modules, decoder layers included, are kept, and an nn.MultiheadAttention inside them is
    rewritten too. Modules are rewritten innermost first, so an encoder holds rewritten layers.
    The model itself (the root module) is never replaced.

    Args:
        model: the model to change.

    Returns:
        The names of the modules rewritten, innermost first.

    Raises:
        ValueError: an nn.MultiheadAttention with add_bias_kv or add_zero_attn.

    Example:
        >>> model = nn.Sequential(nn.TransformerEncoderLayer(16, 4, batch_first=True))
        >>> rewrite_attention(model)
        ['0.self_attn', '0']
    """
    rewritten = []
    for name, module in reversed(list(model.named_modules())):
        plain = next((plain for fused, plain in _REWRITES if type(module) is fused), None)
        if name and plain is not None:
            model.set_submodule(name, plain(module).train(module.training))
            rewritten.append(name)
    if rewritten:
        logger.info("rewrote attention modules into explicit projections: %s", rewritten)
    return rewritten


def _linear(weight, bias):
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        linear.weight.copy_(weight)
        if bias is not None:
            linear.bias.copy_(bias)
    return linear


def _additive_mask(attn_mask, key_padding_mask, batch, heads, target_length, source_length, dtype):
    if attn_mask is None and key_padding_mask is None:
        return None
    mask = torch.zeros(batch, heads, target_length, source_length, dtype=dtype, device=_device(attn_mask, key_padding_mask))
    if attn_mask is not None:  # (L, S), or (N * heads, L, S) as nn.MultiheadAttention takes it
        additive = _as_additive(attn_mask, dtype)
        mask = mask + (additive if attn_mask.dim() == 2 else additive.reshape(batch, heads, target_length, source_length))
    if key_padding_mask is not None:
        mask = mask + _as_additive(key_padding_mask, dtype)[:, None, None, :]
    return mask


def _as_additive(mask, dtype):
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))
    return mask.to(dtype)


def _device(*tensors):
    return next(tensor.device for tensor in tensors if tensor is not None)
