"""CLIP's text transformer (the text tower of OpenAI CLIP), used frozen by LSeg to embed label strings.

Only the text tower is built; CLIP's image tower is never used by LSeg.
Numerics follow ``CLIP.encode_text`` run in float32: QuickGELU, LayerNorm eps 1e-5, a constant causal mask,
``nn.MultiheadAttention`` semantics (q scaled by head_dim**-0.5 before q.k^T), pooling at the end-of-text token.
"""

import numpy as np

import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import Normal, initializer

from .ops_impl import Linear, current_impl, dense, layer_norm_layer

__all__ = ["QuickGELU", "MultiheadSelfAttention", "ResidualAttentionBlock", "CLIPTextEncoder"]


class QuickGELU(nn.Cell):
    """``x * sigmoid(1.702 x)``."""

    def construct(self, x: Tensor) -> Tensor:
        return x * ops.sigmoid(1.702 * x)


class MultiheadSelfAttention(nn.Cell):
    """Self-attention with PyTorch ``nn.MultiheadAttention``'s parameter layout.

    ``in_proj_weight`` [3C, C] holds the q, k, v projections (rows in that order), ``in_proj_bias`` [3C];
    ``out_proj`` is a Dense(C, C). Inputs: x [N, L, C], additive mask [L, L]; output [N, L, C].
    ``impl`` picks the input projection's matmul (see :mod:`.ops_impl`).
    """

    def __init__(self, width: int, num_heads: int, impl: str = "auto"):
        super().__init__()
        if width % num_heads:
            raise ValueError(f"width {width} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = width // num_heads
        self.scale = self.head_dim**-0.5
        self.in_proj_weight = Parameter(initializer(Normal(width**-0.5), (3 * width, width), ms.float32))
        self.in_proj_bias = Parameter(initializer("zeros", (3 * width,), ms.float32))
        impl = current_impl(impl)
        self.out_proj = dense(width, width, impl=impl)
        self.in_proj = Linear(impl)

    def construct(self, x: Tensor, mask: Tensor) -> Tensor:
        n, length, width = x.shape
        qkv = self.in_proj(x, self.in_proj_weight, self.in_proj_bias)
        qkv = qkv.reshape(n, length, 3, self.num_heads, self.head_dim).transpose(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]  # [N, heads, L, hd]
        attn = ops.softmax(ops.matmul(q, k.swapaxes(-1, -2)) + mask, axis=-1)
        out = ops.matmul(attn, v).transpose(0, 2, 1, 3).reshape(n, length, width)
        return self.out_proj(out)


class _MLP(nn.Cell):
    def __init__(self, width: int, impl: str):
        super().__init__()
        self.c_fc = dense(width, 4 * width, impl=impl)
        self.gelu = QuickGELU()
        self.c_proj = dense(4 * width, width, impl=impl)

    def construct(self, x: Tensor) -> Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))


class ResidualAttentionBlock(nn.Cell):
    """``x + attn(ln_1(x))`` then ``x + mlp(ln_2(x))``. [N, L, C] -> same."""

    def __init__(self, width: int, num_heads: int, impl: str = "auto"):
        super().__init__()
        impl = current_impl(impl)
        layer_norm = layer_norm_layer(impl, epsilon=1e-5)
        self.ln_1 = layer_norm((width,))
        self.attn = MultiheadSelfAttention(width, num_heads, impl)
        self.ln_2 = layer_norm((width,))
        self.mlp = _MLP(width, impl)

    def construct(self, x: Tensor, mask: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x), mask)
        return x + self.mlp(self.ln_2(x))


class CLIPTextEncoder(nn.Cell):
    """CLIP text tower: token ids -> text features (before L2 normalisation).

    Args:
        vocab_size: 49408 for CLIP's BPE.
        context_length: 77.
        width, layers, heads: transformer shape (512 / 12 / 8 for CLIP ViT-B/32).
        embed_dim: output width of ``text_projection`` (512 for ViT-B/32).
        impl: "auto", "native" or "lean" (see :mod:`.ops_impl`).

    Inputs: tokens int32 [N, L], L <= context_length (start token, ids, end token = the largest id, zero padding).
        The attention is causal, so the features at the end token do not depend on the padding after it:
        callers may pass only the first L columns that contain every end token (see ``LSeg.encode_text``).
    Output: float32 [N, embed_dim].
    """

    def __init__(
        self,
        vocab_size: int = 49408,
        context_length: int = 77,
        width: int = 512,
        layers: int = 12,
        heads: int = 8,
        embed_dim: int = 512,
        impl: str = "auto",
    ):
        super().__init__()
        impl = current_impl(impl)
        self.context_length = context_length
        self.width = width
        self.embed_dim = embed_dim
        self.token_embedding = nn.Embedding(vocab_size, width, embedding_table=Normal(0.02))
        self.positional_embedding = Parameter(initializer(Normal(0.01), (context_length, width), ms.float32))
        self.resblocks = nn.CellList([ResidualAttentionBlock(width, heads, impl) for _ in range(layers)])
        self.ln_final = layer_norm_layer(impl, epsilon=1e-5)((width,))
        self.text_projection = Parameter(initializer(Normal(width**-0.5), (width, embed_dim), ms.float32))
        mask = np.triu(np.full((context_length, context_length), -np.inf, dtype=np.float32), 1)
        self.attn_mask = Tensor(mask)
        self.one, self.zero = Tensor(1.0, ms.float32), Tensor(0.0, ms.float32)
        self.pool = ops.BatchMatMul()

    def construct(self, tokens: Tensor) -> Tensor:
        length = tokens.shape[1]
        x = self.token_embedding(tokens) + self.positional_embedding[:length]
        mask = self.attn_mask[:length, :length]
        for block in self.resblocks:
            x = block(x, mask)
        x = self.ln_final(x)
        # the row at the end token, picked by a one-hot product (exact: one 1, zeros elsewhere); MindSpore 2.10's
        # ONNX exporter mistranslates ArgMax + GatherNd
        eot = ops.one_hot(tokens.argmax(axis=-1).astype(ms.int32), length, self.one, self.zero)  # [N, L]
        pooled = self.pool(eot.expand_dims(1), x).squeeze(1)  # [N, width]
        return ops.matmul(pooled, self.text_projection)
