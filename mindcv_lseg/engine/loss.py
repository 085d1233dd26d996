"""Segmentation loss: pixel-wise cross-entropy on LSeg's label-similarity logits, with an ignore index.

The reference (PyTorch-Encoding ``SegmentationLosses`` without SE/aux terms) is ``nn.CrossEntropyLoss(ignore_index=-1,
reduction='mean')`` on the full-resolution logits ``[B, N, H, W]``: the mean over the non-ignored pixels.
mindcv's ``create_loss("CE")`` has no ``ignore_index`` (an ignored label crashes in GatherD), so the plug-in has its
own. Unlike ``ops.cross_entropy(..., reduction='mean')`` it returns 0 (not NaN) when every pixel of a batch is
ignored, so one empty crop cannot poison the weights.
"""

import mindspore as ms
from mindspore import nn, ops

from ..kernels.pixel import xent_grad_kernel

__all__ = ["SegCrossEntropy", "LeanSegCrossEntropy", "create_seg_loss", "NetWithLoss"]


class SegCrossEntropy(nn.Cell):
    """Mean pixel-wise softmax cross-entropy over the pixels whose label is not ``ignore_index`` (autodiff).

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
        self.softmax = ops.Softmax(axis=1)
        self.cast = ops.Cast()
        self.not_equal = ops.NotEqual()
        self.maximum = ops.Maximum()
        self.zeros_like = ops.ZerosLike()

    def _valid_and_count(self, labels):
        valid = self.cast(self.not_equal(labels, self.ignore_index), ms.float32)  # [B, H, W]
        return valid, self.maximum(valid.sum(), ms.Tensor(1.0, ms.float32))

    def construct(self, logits, labels):
        labels = self.cast(labels, ms.int32)
        per_pixel = ops.cross_entropy(logits, labels, ignore_index=self.ignore_index, reduction="none")
        valid, count = self._valid_and_count(labels)
        return (per_pixel * valid).sum() / count


class LeanSegCrossEntropy(SegCrossEntropy):
    """:class:`SegCrossEntropy` with a hand-written backward pass (``impl="lean"``).

    ``dL/dlogits = (softmax(logits) - onehot(label)) * valid / count``, computed from the logits when the gradient
    is needed. Automatic differentiation of ``ops.cross_entropy`` keeps several [B, N, H, W] intermediates
    (log-softmax, its gradient chain) alive until the backward pass: with 150 labels at 480x480 each is 138 MB.

    The forward picks ``log_softmax(logits)`` at the label with ``gather_elements`` instead of calling
    ``ops.cross_entropy``, whose composite form keeps several [B, N, H, W] temporaries for the whole CPU graph:
    1.1 GB less in a training step at 480x480 with 150 labels (same values to float32 rounding).

    On CPU with float32 logits the backward pass is one compiled kernel (:mod:`mindcv_lseg.kernels.pixel`).
    """

    def __init__(self, ignore_index: int = 255):
        super().__init__(ignore_index)
        self.grad_kernel = xent_grad_kernel()
        self.use_kernel = self.grad_kernel is not None
        self.scatter_add = ops.TensorScatterElements(axis=1, reduction="add")

    def construct(self, logits, labels):
        labels = self.cast(labels, ms.int32)
        valid, count = self._valid_and_count(labels)
        safe_labels = labels * self.cast(valid, ms.int32)  # ignored pixels point at class 0, masked below
        picked = ops.gather_elements(ops.log_softmax(logits, 1), 1, safe_labels.expand_dims(1)).squeeze(1)
        return -(picked * valid).sum() / count

    def bprop(self, logits, labels, out, dout):
        logits = ops.depend(logits, dout)  # recompute the softmax in the backward pass, not before
        labels = self.cast(labels, ms.int32)
        valid, count = self._valid_and_count(labels)
        safe_labels = labels * self.cast(valid, ms.int32)  # ignored pixels: class 0, weight 0
        weight = valid * (dout / count)  # [B, H, W]
        if self.use_kernel and logits.dtype == ms.float32:
            grad = self.grad_kernel(logits, safe_labels, weight)
        else:
            grad = self._grad_with_mindspore_ops(logits, safe_labels, weight)
        return grad, self.zeros_like(labels)

    def _grad_with_mindspore_ops(self, logits, safe_labels, weight):
        safe_labels, weight = safe_labels.expand_dims(1), weight.expand_dims(1)  # [B, 1, H, W]
        # broadcast explicitly: an implicitly broadcasting op holds ~3.7x its output in GRAPH mode on CPU
        grad = self.softmax(logits) * ops.BroadcastTo(logits.shape)(weight)
        # "- onehot * weight" as a scatter at the label: no [B, N, H, W] one-hot (0.25 GB less at 480x480, 150 labels)
        return self.scatter_add(grad, safe_labels, -weight)


def create_seg_loss(name: str = "CE", ignore_index: int = 255, impl: str = "auto") -> nn.Cell:
    """Build the training loss by name (only ``"CE"``: pixel-wise cross-entropy with ``ignore_index``).

    ``impl`` ("auto", "native", "lean") picks autodiff or the hand-written backward, as for the model
    (:mod:`mindcv_lseg.models.ops_impl`).
    """
    from ..models.ops_impl import current_impl, seg_cross_entropy

    if name.upper() != "CE":
        raise ValueError(f"unsupported loss {name!r}: only 'CE' (pixel-wise cross-entropy) is implemented")
    return seg_cross_entropy(ignore_index, current_impl(impl))


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
