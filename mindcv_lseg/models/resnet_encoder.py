"""mindcv's ResNet as LSeg's image encoder: the four stage outputs at strides 4, 8, 16 and 32.

The network is mindcv's own ``ResNet`` with ``Bottleneck`` blocks (torchvision-v1.5 layout: stride on the 3x3 conv,
BatchNorm eps 1e-5), with three changes that keep its parameter names and shapes:

* its kxk convolutions (the 7x7 stem and the 3x3 of every bottleneck) are computed by :class:`FastConv2d` (GEMM
  form, same ``weight`` [out, in, k, k]): MindSpore's CPU kxk ``Conv2d`` is ~100x slower than its 1x1 one
  (``benchmarks/zeroshot.py --conv`` measures it);
* the stride-2 1x1 shortcut convs subsample first and then run a stride-1 1x1 conv (the same sums);
* the stem max pool pads one pixel on every side (``pad_mode="pad"``, as torchvision) instead of mindcv's
  ``pad_mode="same"``, which pads only bottom/right on even inputs and shifts every window by one pixel.

The classifier head (global pool + Dense) is removed: LSeg uses only the stages.
"""
import math
from typing import Sequence, Tuple

import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import HeUniform, initializer

from mindcv.models.resnet import Bottleneck, ResNet

from .layers import FastConv2d

__all__ = ["ResNetEncoder", "SubsampledConv1x1"]


class SubsampledConv1x1(nn.Cell):
    """A 1x1 convolution with stride s and no bias, computed as "keep every s-th pixel, then a 1x1 conv".

    Same sums as the strided conv, without its slow CPU kernel. The pixels are picked with reshape + split
    (MindSpore 2.10's gradient of a strided 4-D slice is broken on CPU); H and W must be multiples of s.

    Args:
        in_channels, out_channels, stride: as the convolution it replaces.

    Parameter: ``weight`` [out, in, 1, 1] (mindcv's ``nn.Conv2d`` layout). [B, in, H, W] -> [B, out, H/s, W/s].
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.stride = stride
        self.weight = Parameter(
            initializer(HeUniform(math.sqrt(5)), (out_channels, in_channels, 1, 1), ms.float32), name="weight"
        )

    def construct(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        s = self.stride
        x = x.reshape(b, c, h // s, s, w // s, s)
        x = ops.split(x, (1, s - 1), axis=3)[0]
        x = ops.split(x, (1, s - 1), axis=5)[0]
        return ops.conv2d(x.reshape(b, c, h // s, w // s), self.weight)


def _fast_conv(conv: nn.Conv2d) -> FastConv2d:
    """A :class:`FastConv2d` with the geometry and the initial weights of a mindcv kxk ``nn.Conv2d``."""
    k = conv.kernel_size[0]
    fast = FastConv2d(conv.in_channels, conv.out_channels, k, stride=conv.stride[0], padding=(k - 1) // 2,
                      has_bias=conv.has_bias)
    fast.weight.set_data(conv.weight.data)  # keep mindcv's initialisation (matters only when training from scratch)
    return fast


class ResNetEncoder(nn.Cell):
    """mindcv ResNet (Bottleneck) trunk: image [B, 3, H, W] -> 4 maps [B, 256|512|1024|2048, H/4..H/32].

    Args:
        layers: Bottleneck blocks per stage ((3, 4, 23, 3) = ResNet-101).

    Parameters live under ``resnet.`` with mindcv's names (``conv1``, ``bn1``, ``layer{1..4}.{i}.conv1/bn1/...``,
    ``down_sample.0/1``), which map one to one onto torchvision's.
    """

    OUT_CHANNELS = (256, 512, 1024, 2048)

    def __init__(self, layers: Sequence[int] = (3, 4, 23, 3)):
        super().__init__()
        resnet = ResNet(Bottleneck, list(layers), num_classes=1)
        resnet.conv1 = _fast_conv(resnet.conv1)
        resnet.max_pool = nn.MaxPool2d(kernel_size=3, stride=2, pad_mode="pad", padding=1)
        del resnet.pool, resnet.classifier  # global pool + Dense: not part of the encoder
        for stage in (resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4):
            for block in stage:
                block.conv2 = _fast_conv(block.conv2)
                if block.down_sample is not None and block.down_sample[0].stride[0] > 1:
                    conv = block.down_sample[0]
                    block.down_sample[0] = SubsampledConv1x1(conv.in_channels, conv.out_channels, conv.stride[0])
                    block.down_sample[0].weight.set_data(conv.weight.data)
        self.resnet = resnet

    def construct(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        net = self.resnet
        x = net.max_pool(net.relu(net.bn1(net.conv1(x))))
        c1 = net.layer1(x)
        c2 = net.layer2(c1)
        c3 = net.layer3(c2)
        c4 = net.layer4(c3)
        return c1, c2, c3, c4
