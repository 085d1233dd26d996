"""Mixed precision for LSeg, mindcv's way: ``amp_level`` O0/O1/O2/O3 applied with mindcv's ``auto_mixed_precision``.

Only the image branch (``encoder``: ViT + reassemble, ``scratch``: decoder up to ``head1``) is converted. Everything
after it stays float32, as the reference keeps its LayerNorms in float32: the frozen CLIP text tower, both L2
normalisations, the logits (scaled cosine similarities, their optional spatial regularisation, the x2 upsampling),
and the softmax / cross-entropy of the loss. ``LSeg.pixel_embeddings`` casts the decoder output back to float32.

Levels (mindcv's meanings, on the image branch):

- ``O0``: float32 everywhere (the default; on CPU float16 is slower than float32, see the README);
- ``O1``: ``nn.Dense``/``nn.Conv2d``/``nn.Conv2dTranspose`` cells compute in float16 (mindcv's white list; not
  the patch-embedding conv, whose weights the ViT reads directly);
- ``O2``: the image branch computes in float16 except the cells of :data:`AMP_BLACK_LIST`;
- ``O3``: the whole image branch computes in float16.

:data:`AMP_BLACK_LIST` = mindcv's (BatchNorm, LayerNorm) + :data:`CPU_FLOAT32_CELLS`, the cells whose MindSpore 2.10
CPU kernels have no float16 version. mindcv's ViT attention computes its softmax in float32 in every level.

The compiled CPU kernels of the lean layers (OpenBLAS products, the one-pass GELU, the LayerNorm:
:mod:`mindcv_lseg.kernels`) are float32 only, and MindSpore casts the inputs of every op inside a converted cell to
float16: at levels O1-O3 those cells (``BlasMatMul``, ``ErfGELU``, ``LeanLayerNorm``, ...) of the image branch use
MindSpore's own ops instead, as before the kernels existed; the float32 text tower and logits keep the kernels.
(Mixed precision is for Ascend/GPU; on CPU float16 is slower than float32.)
"""

from mindcv.utils import amp as mindcv_amp
from mindspore import nn

from .ops_impl import without_compiled_kernels

__all__ = ["AMP_LEVELS", "AMP_BLACK_LIST", "CPU_FLOAT32_CELLS", "check_amp_level", "auto_mixed_precision"]

AMP_LEVELS = ("O0", "O1", "O2", "O3")

#: cells kept in float32 in O2 because a kernel they use has no float16 version on MindSpore 2.10's CPU. None so far:
#: every kernel LSeg's O2 graphs use (MatMul, BatchMatMul, Conv2D and its gradients, Erf, Softmax, bilinear resize,
#: the GELU/attention/convolution backward passes) runs in float16 on this CPU in GRAPH and PYNATIVE mode
#: (``tests/test_amp.py``). Add a cell here when a kernel is found missing.
CPU_FLOAT32_CELLS = ()

AMP_BLACK_LIST = tuple(mindcv_amp.AMP_BLACK_LIST) + CPU_FLOAT32_CELLS


def check_amp_level(amp_level: str) -> str:
    """Return ``amp_level`` if it is one of O0..O3, else raise ``ValueError`` naming the choices."""
    if amp_level not in AMP_LEVELS:
        raise ValueError(f"amp_level must be one of {', '.join(AMP_LEVELS)}, got {amp_level!r}")
    return amp_level


def auto_mixed_precision(net: nn.Cell, amp_level: str = "O0") -> nn.Cell:
    """Convert an :class:`~mindcv_lseg.models.lseg.LSeg` network's image branch to ``amp_level``, in place.

    Parameter names are unchanged (checkpoints load before and after), parameters stay float32 (float16 copies
    are made inside the graph). A network can be converted once.

    Args:
        net: an LSeg network (``net.encoder``, ``net.scratch``).
        amp_level: "O0", "O1", "O2" or "O3".

    Returns:
        ``net``; ``net.amp_level`` records the level.

    Raises:
        ValueError: unknown level, or ``net`` was already converted to another level.
    """
    check_amp_level(amp_level)
    done = getattr(net, "amp_level", "O0")
    if done != "O0":
        if done == amp_level:
            return net
        raise ValueError(f"the network is already converted to amp_level {done}; create a new one for {amp_level}")
    # the decoder's cells, not ``scratch`` itself: its ``regularize`` (the logits' optional spatial regularisation)
    # would run in float16 too
    decoder = [cell for name, cell in net.scratch.name_cells().items() if name != "head_block"]
    parts = [net.encoder] + decoder
    if amp_level == "O1":  # white-list wrappers hide a cell's attributes; the ViT reads patch_embed.proj's weights
        parts = [net.encoder.vit.blocks, net.encoder.reassemble, net.scratch]  # (O1 wraps children only)
    for part in parts:
        if amp_level == "O2":
            mindcv_amp._auto_black_list(part, AMP_BLACK_LIST)  # what mindcv's O2 does, with LSeg's black list
        else:
            mindcv_amp.auto_mixed_precision(part, amp_level)
    if amp_level != "O0":  # the float32-only kernels; the text tower and the logits stay float32 and keep them
        without_compiled_kernels(net.encoder)
        without_compiled_kernels(net.scratch)
    net.amp_level = amp_level
    return net
