"""DPT pieces used by LSeg: readout handling, reassembly of ViT tokens into a feature pyramid, and the
RefineNet-style fusion decoder ("scratch").

Shapes in the docstrings are for an input of H x W pixels and a patch size p (token grid H/p x W/p).
Every layer mirrors the reference (``lseg_vit.py`` / ``lseg_blocks.py``): see docs/reference_numerics.md,
"Forward pass".
"""

from typing import Sequence, Tuple

from mindspore import Tensor, nn, ops

from .ops_impl import BilinearResize, conv2d, conv_transpose2d, current_impl, dense, gelu_layer

__all__ = [
    "ProjectReadout",
    "AddReadout",
    "IgnoreReadout",
    "ReassembleBranch",
    "Reassemble",
    "ResidualConvUnit",
    "FeatureFusionBlock",
]


class IgnoreReadout(nn.Cell):
    """readout='ignore': drop the class token. [B, 1+N, C] -> [B, N, C]."""

    def construct(self, x: Tensor) -> Tensor:
        return x[:, 1:]


class AddReadout(nn.Cell):
    """readout='add': add the class token to every patch token. [B, 1+N, C] -> [B, N, C]."""

    def construct(self, x: Tensor) -> Tensor:
        return x[:, 1:] + x[:, :1]


class ProjectReadout(nn.Cell):
    """readout='project': ``GELU(Linear([patch, cls]))``, patch token first. [B, 1+N, C] -> [B, N, C]."""

    def __init__(self, dim: int, impl: str = "auto"):
        super().__init__()
        impl = current_impl(impl)
        self.project = dense(2 * dim, dim, impl=impl)
        self.act = gelu_layer(impl)()

    def construct(self, x: Tensor) -> Tensor:
        patches = x[:, 1:]
        readout = ops.broadcast_to(x[:, :1], patches.shape)
        return self.act(self.project(ops.concat((patches, readout), axis=-1)))


def _make_readout(readout: str, dim: int, impl: str) -> nn.Cell:
    if readout == "project":
        return ProjectReadout(dim, impl)
    if readout == "add":
        return AddReadout()
    if readout == "ignore":
        return IgnoreReadout()
    raise ValueError(f"readout must be 'project', 'add' or 'ignore', got {readout!r}")


class ReassembleBranch(nn.Cell):
    """Tokens of one ViT block -> one pyramid level.

    readout -> tokens to a [B, C, H/p, W/p] map -> 1x1 conv to ``out_channels`` -> resample by ``scale``:
    ``scale`` > 1: transposed conv (kernel = stride = scale); 1: none; 0.5: 3x3 conv with stride 2.

    Inputs: tokens [B, 1 + (H/p)(W/p), vit_dim], grid_h = H/p, grid_w = W/p.
    Output: [B, out_channels, scale*H/p, scale*W/p].
    """

    def __init__(self, vit_dim: int, out_channels: int, scale: float, readout: str = "project", impl: str = "auto"):
        super().__init__()
        impl = current_impl(impl)
        self.readout = _make_readout(readout, vit_dim, impl)
        self.proj = conv2d(vit_dim, out_channels, 1, has_bias=True, impl=impl)
        if scale > 1:
            factor = int(scale)
            self.resample = conv_transpose2d(out_channels, out_channels, factor, has_bias=True, impl=impl)
        elif scale == 1:
            self.resample = nn.Identity()
        elif scale == 0.5:
            self.resample = conv2d(out_channels, out_channels, 3, stride=2, padding=1, has_bias=True, impl=impl)
        else:
            raise ValueError(f"reassemble scale must be an integer >= 1 or 0.5, got {scale}")

    def construct(self, tokens: Tensor, grid_h: int, grid_w: int) -> Tensor:
        x = self.readout(tokens)
        b, _, c = x.shape
        x = x.transpose(0, 2, 1).reshape(b, c, grid_h, grid_w)
        return self.resample(self.proj(x))


class Reassemble(nn.Cell):
    """Four reassemble branches producing the pyramid at strides 4, 8, 16 and 32 of the input.

    Args:
        vit_dim: ViT width.
        patch_size: ViT patch size (16 or 32); branch k resamples by ``patch_size / 2**(k+2)``.
        out_channels: the four output widths (reference: [256, 512, 1024, 1024] for ViT-L/16, [96, 192, 384, 768] for ViT-B/32).
        readout: 'project' (reference), 'add' or 'ignore'.
        impl: "auto", "native" or "lean" (see :mod:`.ops_impl`).

    Inputs: tuple of 4 token tensors [B, 1 + (H/p)(W/p), vit_dim], the grid size (H/p, W/p).
    Outputs: tuple of 4 maps [B, out_channels[k], H/2**(k+2), W/2**(k+2)].
    """

    def __init__(
        self, vit_dim: int, patch_size: int, out_channels: Sequence[int], readout: str = "project", impl: str = "auto"
    ):
        super().__init__()
        impl = current_impl(impl)
        scales = [patch_size / 2 ** (k + 2) for k in range(4)]
        self.branches = nn.CellList(
            [ReassembleBranch(vit_dim, c, s, readout, impl) for c, s in zip(out_channels, scales)]
        )

    def construct(self, tokens: Tuple[Tensor, ...], grid_h: int, grid_w: int) -> Tuple[Tensor, ...]:
        return (
            self.branches[0](tokens[0], grid_h, grid_w),
            self.branches[1](tokens[1], grid_h, grid_w),
            self.branches[2](tokens[2], grid_h, grid_w),
            self.branches[3](tokens[3], grid_h, grid_w),
        )


def conv3x3(in_channels: int, out_channels: int, has_bias: bool = False, impl: str = "auto") -> nn.Cell:
    """3x3 convolution, stride 1, zero padding 1 (PyTorch's ``padding=1``)."""
    return conv2d(in_channels, out_channels, 3, stride=1, padding=1, has_bias=has_bias, impl=current_impl(impl))


class ResidualConvUnit(nn.Cell):
    """``x + BN(conv(ReLU(BN(conv(ReLU(x))))))`` with 3x3 convs (no bias), BatchNorm eps 1e-5. [B,C,h,w] -> same."""

    def __init__(self, channels: int, impl: str = "auto"):
        super().__init__()
        self.conv1 = conv3x3(channels, channels, impl=impl)
        self.conv2 = conv3x3(channels, channels, impl=impl)
        self.bn1 = nn.BatchNorm2d(channels, eps=1e-5, momentum=0.9)
        self.bn2 = nn.BatchNorm2d(channels, eps=1e-5, momentum=0.9)
        self.relu = nn.ReLU()

    def construct(self, x: Tensor) -> Tensor:
        out = self.bn1(self.conv1(self.relu(x)))
        out = self.bn2(self.conv2(self.relu(out)))
        return out + x


class FeatureFusionBlock(nn.Cell):
    """RefineNet fusion: ``out_conv(up2x(RCU2(x + RCU1(skip))))``; ``skip`` optional (the coarsest block has none).

    The reference applies the 1x1 ``out_conv`` (with bias) after the x2 bilinear (align_corners=True)
    upsampling. Both are linear and the interpolation weights of every output pixel sum to one, so
    ``out_conv(up(x)) == up(out_conv(x))``; the conv runs first here, on 4x fewer pixels (differences are
    float32 rounding, far inside the parity tolerance). [B,C,h,w] (+ [B,C,h,w]) -> [B,C,2h,2w].
    """

    def __init__(self, channels: int, use_skip: bool = True, impl: str = "auto"):
        super().__init__()
        self.use_skip = use_skip
        if use_skip:
            self.res_conf_unit1 = ResidualConvUnit(channels, impl)
        self.res_conf_unit2 = ResidualConvUnit(channels, impl)
        self.out_conv = conv2d(channels, channels, 1, has_bias=True, impl=current_impl(impl))
        self.upsample = BilinearResize(align_corners=True, impl=current_impl(impl))

    def fuse(self, x: Tensor, skip: Tensor = None) -> Tensor:
        """Everything but the final x2 upsampling: [B,C,h,w] (+ [B,C,h,w]) -> [B,C,h,w]."""
        if self.use_skip:
            x = x + self.res_conf_unit1(skip)
        return self.out_conv(self.res_conf_unit2(x))

    def construct(self, x: Tensor, skip: Tensor = None) -> Tensor:
        x = self.fuse(x, skip)
        return self.upsample(x, 2 * x.shape[2], 2 * x.shape[3])
