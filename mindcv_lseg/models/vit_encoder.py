"""ViT image encoder for LSeg: mindcv's ``VisionTransformer`` returning the outputs of chosen blocks.

The transformer itself is mindcv's; this module only adds what LSeg's ``forward_flex`` does on top of it:
position embeddings resampled to the input's token grid (bilinear, half-pixel centres, as the reference's
``_resize_pos_embed``) and the raw outputs of the hooked blocks returned explicitly (no forward hooks),
so the whole network compiles in GRAPH mode.
"""

from typing import Sequence, Tuple

from mindcv.models.vit import VisionTransformer
from mindspore import Tensor, ops

from .ops_impl import BilinearResize, PatchEmbedding, adapt_vit_block, current_impl, gelu_layer, layer_norm_layer

__all__ = ["ViTEncoder", "resize_pos_embed"]


def resize_pos_embed(pos_embed: Tensor, grid_size: int, grid_h: int, grid_w: int, resize=None) -> Tensor:
    """Resample ViT position embeddings to a new token grid.

    Args:
        pos_embed: [1, 1 + grid_size**2, C], class-token embedding first.
        grid_size: side of the stored square grid (24 for ViT-L/16@384, 12 for ViT-B/32@384).
        grid_h, grid_w: target grid.

    Returns:
        [1, 1 + grid_h * grid_w, C]; the grid part is bilinearly resized with ``align_corners=False``
        (PyTorch's ``F.interpolate(..., mode="bilinear")`` default), the class token is kept.
    """
    channels = pos_embed.shape[-1]
    cls_pos = pos_embed[:, :1]
    grid = pos_embed[:, 1:].reshape(1, grid_size, grid_size, channels).transpose(0, 3, 1, 2)
    if resize is None:
        grid = ops.interpolate(grid, size=(grid_h, grid_w), mode="bilinear", align_corners=False)
    else:
        grid = resize(grid, grid_h, grid_w)
    grid = grid.transpose(0, 2, 3, 1).reshape(1, grid_h * grid_w, channels)
    return ops.concat((cls_pos, grid), axis=1)


class ViTEncoder(VisionTransformer):
    """mindcv ViT that returns the token sequences after the hooked blocks.

    Constructed as the reference's timm ViT: exact-erf GELU, LayerNorm epsilon 1e-6, qkv bias, class token.
    The GELU, the LayerNorms, the attention and the patch embedding come from :mod:`.ops_impl` (``impl``).
    No classifier is built; the final LayerNorm (``norm``) is not applied (LSeg uses raw block outputs) but is
    kept so that checkpoints round-trip. Only ``construct`` differs from mindcv's ``VisionTransformer``.

    Args:
        image_size: size the stored position embeddings were trained for (384).
        patch_size: 16 or 32.
        embed_dim, depth, num_heads, mlp_ratio: transformer shape.
        hooks: indices (0-based) of the blocks whose outputs are returned, ascending.
        weight_init: run mindcv's (slow) truncated-normal initialisation; pass False when weights are loaded.
        drop_rate: dropout after the position embedding, the attention projection and in the MLPs (training only;
            timm's ``drop_rate`` as in the reference's ViT; mindcv's own ViT uses it only before its classifier,
            which this encoder does not have).
        drop_path_rate: stochastic depth, growing linearly to this rate over the blocks (mindcv/timm).
        impl: "auto", "native" or "lean" (see :mod:`.ops_impl`).

    Inputs:
        x: [B, 3, H, W] float32 with H and W multiples of ``patch_size``.

    Outputs:
        tuple of ``len(hooks)`` tensors [B, 1 + (H/p)*(W/p), embed_dim] (class token first).
    """

    def __init__(
        self,
        image_size: int = 384,
        patch_size: int = 16,
        embed_dim: int = 1024,
        depth: int = 24,
        num_heads: int = 16,
        hooks: Sequence[int] = (5, 11, 17, 23),
        mlp_ratio: float = 4.0,
        weight_init: bool = True,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        impl: str = "auto",
    ):
        impl = current_impl(impl)
        hooks = tuple(int(h) for h in hooks)
        if list(hooks) != sorted(set(hooks)) or hooks[-1] >= depth or hooks[0] < 0:
            raise ValueError(f"hooks must be distinct ascending block indices in [0, {depth}), got {hooks}")
        super().__init__(
            image_size=image_size,
            patch_size=patch_size,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            qkv_bias=True,
            weight_init=weight_init,
            act_layer=gelu_layer(impl),
            norm_layer=layer_norm_layer(impl, epsilon=1e-6),
            num_classes=0,
            pos_drop_rate=drop_rate,
            proj_drop_rate=drop_rate,
            drop_path_rate=drop_path_rate,
        )
        for block in self.blocks:  # same parameters (names, values), the impl's layers
            adapt_vit_block(block, num_heads, impl, block.attn.proj_drop if drop_rate > 0 else None)
        self.use_pos_drop = drop_rate > 0
        self.patch_embedding = PatchEmbedding(patch_size, impl)
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.grid_size = image_size // patch_size
        self.pos_resize = BilinearResize(align_corners=False, impl=impl)
        self.run_depth = hooks[-1] + 1  # blocks after the last hook are never run
        self.is_hook = tuple(i in hooks for i in range(self.run_depth))

    def construct(self, x: Tensor) -> Tuple[Tensor, ...]:
        b, _, h, w = x.shape
        grid_h = h // self.patch_size
        grid_w = w // self.patch_size
        # mindcv's patch_embed.proj parameters; mindcv's PatchEmbed insists on the stored image size
        tokens = self.patch_embedding(x, self.patch_embed.proj.weight, self.patch_embed.proj.bias)  # [B, gh*gw, C]
        cls_token = ops.broadcast_to(self.cls_token, (b, -1, -1))
        tokens = ops.concat((cls_token, tokens), axis=1)
        if grid_h == self.grid_size and grid_w == self.grid_size:  # half-pixel resize to the same size = identity
            tokens = tokens + self.pos_embed
        else:
            tokens = tokens + resize_pos_embed(self.pos_embed, self.grid_size, grid_h, grid_w, self.pos_resize)
        if self.use_pos_drop:
            tokens = self.pos_drop(tokens)
        outs = ()
        for i in range(self.run_depth):
            tokens = self.blocks[i](tokens)
            if self.is_hook[i]:
                outs = outs + (tokens,)
        return outs
