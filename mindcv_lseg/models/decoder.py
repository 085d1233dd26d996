"""LSeg's decoder ("scratch"): 3x3 projections of the pyramid, four fusion blocks, the 1x1 embedding head and the
optional spatial-regularisation block applied to the logits. All of it is the 10x-learning-rate group in training.
"""

from typing import Sequence, Tuple

from mindspore import Tensor, nn

from .dpt import FeatureFusionBlock, conv3x3
from .ops_impl import conv2d, current_impl

__all__ = ["DepthwiseConv", "SpatialRegBlock", "LSegScratch"]


class DepthwiseConv(nn.Cell):
    """One 3x3 conv (1 -> 1 channel, with bias) applied to every channel independently. [B,N,h,w] -> same."""

    def __init__(self, impl: str = "auto"):
        super().__init__()
        self.depthwise = conv3x3(1, 1, has_bias=True, impl=impl)

    def construct(self, x: Tensor) -> Tensor:
        b, n, h, w = x.shape
        return self.depthwise(x.reshape(b * n, 1, h, w)).reshape(b, n, h, w)


_ACTIVATIONS = {"relu": nn.ReLU, "lrelu": lambda: nn.LeakyReLU(0.01), "tanh": nn.Tanh}


class SpatialRegBlock(nn.Cell):
    """LSeg's spatial regularisation of the logits (``arch_option`` 1: bottleneck, 2: depthwise).

    One shared block applied ``max(block_depth, 1)`` times; every application but the last is followed by
    the activation. bottleneck: ``dw(x) + max_n(x)``; depthwise: ``dw(x)``. [B,N,h,w] -> same.
    """

    def __init__(self, arch_option: int, block_depth: int, activation: str = "lrelu", impl: str = "auto"):
        super().__init__()
        if arch_option not in (1, 2):
            raise ValueError(f"arch_option must be 0 (none), 1 (bottleneck) or 2 (depthwise), got {arch_option}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
        self.bottleneck = arch_option == 1
        self.repeats = max(int(block_depth), 1)
        self.depthwise = DepthwiseConv(impl)
        self.act = _ACTIVATIONS[activation]()

    def _block(self, x: Tensor) -> Tensor:
        if self.bottleneck:
            return self.depthwise(x) + x.max(axis=1, keepdims=True)
        return self.depthwise(x)

    def construct(self, x: Tensor) -> Tensor:
        for _ in range(self.repeats - 1):
            x = self.act(self._block(x))
        return self._block(x)


class LSegScratch(nn.Cell):
    """Pyramid -> per-pixel embeddings at half the input resolution.

    Args:
        in_channels: widths of the four pyramid levels.
        features: decoder width (256).
        out_channels: embedding width = text embedding width (512).
        arch_option, block_depth, activation: optional spatial regularisation of the logits (0 = none).
        impl: "auto", "native" or "lean" (see :mod:`.ops_impl`).

    ``construct`` inputs: 4 maps [B, in_channels[k], H/2**(k+2), W/2**(k+2)]; output: [B, out_channels, H/2, W/2]
    (not normalised). ``regularize`` maps logits [B, N, H/2, W/2] to the same shape.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        features: int = 256,
        out_channels: int = 512,
        arch_option: int = 0,
        block_depth: int = 0,
        activation: str = "lrelu",
        impl: str = "auto",
    ):
        super().__init__()
        impl = current_impl(impl)
        self.layer1_rn = conv3x3(in_channels[0], features, impl=impl)
        self.layer2_rn = conv3x3(in_channels[1], features, impl=impl)
        self.layer3_rn = conv3x3(in_channels[2], features, impl=impl)
        self.layer4_rn = conv3x3(in_channels[3], features, impl=impl)
        self.refinenet1 = FeatureFusionBlock(features, impl=impl)
        self.refinenet2 = FeatureFusionBlock(features, impl=impl)
        self.refinenet3 = FeatureFusionBlock(features, impl=impl)
        self.refinenet4 = FeatureFusionBlock(features, use_skip=False, impl=impl)
        self.head1 = conv2d(features, out_channels, 1, has_bias=True, impl=impl)
        self.has_head_block = arch_option != 0
        if self.has_head_block:
            self.head_block = SpatialRegBlock(arch_option, block_depth, activation, impl)

    def construct(self, layers: Tuple[Tensor, ...]) -> Tensor:
        path_4 = self.refinenet4(self.layer4_rn(layers[3]))
        path_3 = self.refinenet3(path_4, self.layer3_rn(layers[2]))
        path_2 = self.refinenet2(path_3, self.layer2_rn(layers[1]))
        # head1 (a 1x1 conv) before refinenet1's x2 upsampling instead of after: both are linear and the
        # interpolation weights of every output pixel sum to one, so the order does not change the values beyond
        # float32 rounding, and the conv runs on 4x fewer pixels
        fused = self.head1(self.refinenet1.fuse(path_2, self.layer1_rn(layers[0])))
        return self.refinenet1.upsample(fused, 2 * fused.shape[2], 2 * fused.shape[3])

    def regularize(self, logits: Tensor) -> Tensor:
        if self.has_head_block:
            return self.head_block(logits)
        return logits
