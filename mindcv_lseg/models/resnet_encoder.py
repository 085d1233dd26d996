"""mindcv's ResNet as LSeg's image encoder: the four stage outputs at strides 4, 8, 16 and 32.

The network is mindcv's own ``ResNet`` with ``Bottleneck`` blocks (torchvision-v1.5 layout: stride on the 3x3 conv,
BatchNorm eps 1e-5), with three changes that keep its parameter names and shapes:

* with ``impl="lean"`` (the CPU default) every convolution is computed as GEMMs through OpenBLAS: the kxk ones
  (the 7x7 stem and the 3x3 of every bottleneck) in GEMM form, the stride-1 1x1 ones directly, and the stride-2 1x1
  shortcut convs subsample first (same sums, same ``weight``; :func:`~mindcv_lseg.models.ops_impl.adapt_conv`):
  MindSpore's CPU kxk ``Conv2d`` is ~100x slower than its 1x1 one (``benchmarks/zeroshot.py --conv`` measures it);
  ``impl="native"`` keeps mindcv's convs;
* the stem max pool pads one pixel on every side (``pad_mode="pad"``, as torchvision) instead of mindcv's
  ``pad_mode="same"``, which pads only bottom/right on even inputs and shifts every window by one pixel.

The classifier head (global pool + Dense) is removed: LSeg uses only the stages.
"""

from typing import Sequence, Tuple

from mindcv.models.resnet import Bottleneck, ResNet
from mindspore import Tensor, nn

from .ops_impl import adapt_conv, current_impl

__all__ = ["ResNetEncoder"]


class ResNetEncoder(nn.Cell):
    """mindcv ResNet (Bottleneck) trunk: image [B, 3, H, W] -> 4 maps [B, 256|512|1024|2048, H/4..H/32].

    Args:
        layers: Bottleneck blocks per stage ((3, 4, 23, 3) = ResNet-101).
        impl: "auto", "native" or "lean" (see :mod:`.ops_impl`); same parameters either way.

    Parameters live under ``resnet.`` with mindcv's names (``conv1``, ``bn1``, ``layer{1..4}.{i}.conv1/bn1/...``,
    ``down_sample.0/1``), which map one to one onto torchvision's.
    """

    OUT_CHANNELS = (256, 512, 1024, 2048)

    def __init__(self, layers: Sequence[int] = (3, 4, 23, 3), impl: str = "auto"):
        super().__init__()
        impl = current_impl(impl)
        resnet = ResNet(Bottleneck, list(layers), num_classes=1)
        resnet.conv1 = adapt_conv(resnet.conv1, impl)
        resnet.max_pool = nn.MaxPool2d(kernel_size=3, stride=2, pad_mode="pad", padding=1)
        del resnet.pool, resnet.classifier  # global pool + Dense: not part of the encoder
        for stage in (resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4):
            for block in stage:
                block.conv1 = adapt_conv(block.conv1, impl)
                block.conv2 = adapt_conv(block.conv2, impl)
                block.conv3 = adapt_conv(block.conv3, impl)
                if block.down_sample is not None:
                    block.down_sample[0] = adapt_conv(block.down_sample[0], impl)
        self.resnet = resnet

    def construct(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        net = self.resnet
        x = net.max_pool(net.relu(net.bn1(net.conv1(x))))
        c1 = net.layer1(x)
        c2 = net.layer2(c1)
        c3 = net.layer3(c2)
        c4 = net.layer4(c3)
        return c1, c2, c3, c4
