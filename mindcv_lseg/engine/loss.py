"""Segmentation loss: pixel-wise cross-entropy on LSeg's label-similarity logits, with an ignore index.

The reference (PyTorch-Encoding ``SegmentationLosses`` without SE/aux terms) is ``nn.CrossEntropyLoss(ignore_index=-1,
reduction='mean')`` on the full-resolution logits ``[B, N, H, W]``: the mean over the non-ignored pixels.
mindcv's ``create_loss("CE")`` has no ``ignore_index`` (an ignored label crashes in GatherD), so the plug-in has its
own. Unlike ``ops.cross_entropy(..., reduction='mean')`` it returns 0 (not NaN) when every pixel of a batch is
ignored, so one empty crop cannot poison the weights.
"""
import mindspore as ms
from mindspore import nn, ops

__all__ = ["SegCrossEntropy", "create_seg_loss", "NetWithLoss"]


class SegCrossEntropy(nn.Cell):
    """Mean pixel-wise softmax cross-entropy over the pixels whose label is not ``ignore_index``.

    Args:
        ignore_index: label value that contributes neither to the sum nor to the pixel count.

    Inputs:
        - **logits** (Tensor) - float32 ``[B, N, H, W]`` (N classes).
        - **labels** (Tensor) - int32 ``[B, H, W]``, values in ``[0, N)`` or ``ignore_index``.

    Outputs:
        Scalar float32 Tensor: ``sum(-log softmax(logits)[label]) / max(#valid pixels, 1)``.
    """

    def __init__(self, ignore_index: int = 255):
        super().__init__()
        self.ignore_index = int(ignore_index)

    def construct(self, logits, labels):
        labels = ops.cast(labels, ms.int32)
        per_pixel = ops.cross_entropy(logits, labels, ignore_index=self.ignore_index, reduction="none")
        valid = ops.cast(ops.not_equal(labels, self.ignore_index), ms.float32)
        count = ops.maximum(valid.sum(), ops.ones((), ms.float32))
        return (per_pixel * valid).sum() / count


def create_seg_loss(name: str = "CE", ignore_index: int = 255) -> nn.Cell:
    """Build the training loss by name (only ``"CE"``: pixel-wise cross-entropy with ``ignore_index``)."""
    if name.upper() != "CE":
        raise ValueError(f"unsupported loss {name!r}: only 'CE' (pixel-wise cross-entropy) is implemented")
    return SegCrossEntropy(ignore_index)


class NetWithLoss(nn.Cell):
    """LSeg network + loss, with the label embeddings held as a constant input.

    The CLIP text encoder is frozen, so the label embeddings are computed once (``net.encode_text(labels)``) and
    passed to ``net(x, text)`` every step; they are stored as a non-trainable Parameter so GRAPH mode does not
    re-embed them as a constant per compile.

    Args:
        net: LSeg network, ``net(x [B,3,H,W], text [N,C]) -> logits [B,N,H,W]``.
        loss_fn: e.g. :class:`SegCrossEntropy`.
        text_features: float32 Tensor ``[N, C_text]`` (raw CLIP text features).

    Inputs:
        - **image** (Tensor) - float32 ``[B, 3, H, W]``.
        - **label** (Tensor) - int32 ``[B, H, W]``.

    Outputs:
        Scalar loss.
    """

    def __init__(self, net: nn.Cell, loss_fn: nn.Cell, text_features):
        super().__init__(auto_prefix=False)
        self.net = net
        self.loss_fn = loss_fn
        self.text_features = ms.Parameter(text_features, name="label_text_features", requires_grad=False)

    def construct(self, image, label):
        logits = self.net(image, self.text_features)
        return self.loss_fn(logits, label)
