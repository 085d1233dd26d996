"""LSeg: language-driven semantic segmentation (Li et al., ICLR 2022) as a mindcv model.

Image branch: mindcv ViT -> DPT reassemble -> fusion decoder -> per-pixel embeddings at H/2.
Text branch: frozen CLIP text transformer -> one embedding per free-text label.
Logits: cosine similarity of the two, times the fixed scale 1/0.07, bilinearly upsampled x2.
"""

from typing import Iterable, Optional, Sequence, Union

import numpy as np

import mindspore as ms
from mindcv.models.registry import register_model
from mindspore import Tensor, nn, ops

from ..text.tokenizer import tokenize
from .clip_text import CLIPTextEncoder
from .decoder import LSegScratch
from .dpt import Reassemble
from .ops_impl import BilinearResize, cosine_logits, current_impl
from .vit_encoder import ViTEncoder

__all__ = ["LSeg", "LSegImageEncoder", "LOGIT_SCALE", "lseg_vitl16_384", "lseg_vitb32", "lseg_tiny_test"]

# exp(float32(log(1/0.07))) computed in float32, as the reference's ``nn.Parameter(...).exp()``: 14.2857141
LOGIT_SCALE = float(np.exp(np.float32(np.log(1 / 0.07)), dtype=np.float32))
INPUT_MULTIPLE = 32


def _cfg(url="", **kwargs):
    return {
        "url": url,
        "num_classes": 0,  # open vocabulary: the classes are the labels passed at run time
        "input_size": (3, 480, 480),
        "mean": (0.5, 0.5, 0.5),  # x = (rgb/255 - 0.5) / 0.5
        "std": (0.5, 0.5, 0.5),
        "first_conv": "encoder.vit.patch_embed.proj",
        "classifier": "scratch.head1",
        **kwargs,
    }


default_cfgs = {
    "lseg_vitl16_384": _cfg(
        text_encoder="CLIP ViT-B/32",
        official_checkpoint="demo_e200.ckpt (isl-org/lang-seg, convert with tools/convert.py)",
    ),
    "lseg_vitb32": _cfg(text_encoder="CLIP ViT-B/32"),
    "lseg_tiny_test": _cfg(input_size=(3, 64, 64), text_encoder="tiny (tests only)"),
}

# architecture of each entry: image encoder, reassemble widths, text tower (docs/reference_numerics.md, "Variants")
ARCH_CFGS = {
    "lseg_vitl16_384": dict(
        image_size=384,
        patch_size=16,
        vit_dim=1024,
        vit_depth=24,
        vit_heads=16,
        hooks=(5, 11, 17, 23),
        reassemble_channels=(256, 512, 1024, 1024),
        features=256,
        text_width=512,
        text_layers=12,
        text_heads=8,
        embed_dim=512,
    ),
    "lseg_vitb32": dict(
        image_size=384,
        patch_size=32,
        vit_dim=768,
        vit_depth=12,
        vit_heads=12,
        hooks=(2, 5, 8, 11),
        reassemble_channels=(96, 192, 384, 768),
        features=256,
        text_width=512,
        text_layers=12,
        text_heads=8,
        embed_dim=512,
    ),
    "lseg_tiny_test": dict(
        image_size=64,
        patch_size=16,
        vit_dim=64,
        vit_depth=4,
        vit_heads=2,
        hooks=(0, 1, 2, 3),
        reassemble_channels=(16, 32, 64, 64),
        features=32,
        text_width=64,
        text_layers=2,
        text_heads=2,
        embed_dim=64,
    ),
}


class LSegImageEncoder(nn.Cell):
    """ViT + DPT reassemble: image [B,3,H,W] -> pyramid of 4 maps at strides 4, 8, 16, 32."""

    def __init__(
        self,
        image_size,
        patch_size,
        vit_dim,
        vit_depth,
        vit_heads,
        hooks,
        reassemble_channels,
        readout="project",
        weight_init=True,
        drop_rate=0.0,
        drop_path_rate=0.0,
        impl="auto",
    ):
        super().__init__()
        impl = current_impl(impl)
        self.patch_size = patch_size
        self.vit = ViTEncoder(
            image_size,
            patch_size,
            vit_dim,
            vit_depth,
            vit_heads,
            hooks,
            weight_init=weight_init,
            drop_rate=drop_rate,
            drop_path_rate=drop_path_rate,
            impl=impl,
        )
        self.reassemble = Reassemble(vit_dim, patch_size, reassemble_channels, readout, impl)

    def construct(self, x: Tensor):
        grid_h = x.shape[2] // self.patch_size
        grid_w = x.shape[3] // self.patch_size
        return self.reassemble(self.vit(x), grid_h, grid_w)


def used_text_length(tokens: np.ndarray, shortest: int) -> int:
    """Columns of CLIP tokens ``[N, context_length]`` that hold every end token (the largest id of each row),
    rounded up to a power of two, at least ``shortest`` and at most ``context_length``: the causal text tower gives
    the same features over these columns as over all of them. Powers of two keep the shapes GRAPH mode compiles
    few (4, 8, 16, 32, 64, 77) while short labels (one or two words: 3-4 tokens) run over 4 columns, not 77."""
    used = max(int(tokens.argmax(axis=1).max()) + 1, shortest)
    return min(tokens.shape[1], 1 << (used - 1).bit_length())


class LSeg(nn.Cell):
    """LSeg network.

    Args:
        image_size, patch_size, vit_dim, vit_depth, vit_heads, hooks: the ViT image encoder (mindcv ``VisionTransformer``).
        reassemble_channels: widths of the four reassembled pyramid levels.
        features: decoder width (256).
        text_width, text_layers, text_heads, embed_dim: the CLIP text tower; ``embed_dim`` is also the pixel embedding width.
        readout: 'project' (reference), 'add' or 'ignore'.
        arch_option, block_depth, activation: optional spatial regularisation of the logits (0 = none, as released models).
        vocab_size, context_length: CLIP tokenizer constants.
        weight_init: run mindcv's slow ViT initialisation; pass False when weights are loaded afterwards.
        drop_rate, drop_path_rate: dropout and stochastic depth of the ViT image encoder (training only; mindcv's
            ``create_model`` arguments of the same names).
        recompute: training memory for time: the ViT blocks keep only their inputs for the backward pass and run
            their forward again there (MindSpore's ``Cell.recompute``; same loss and gradients). Needs the ViT image
            encoder; no effect on inference.
        image_encoder: a Cell mapping [B, 3, H, W] to the 4-level pyramid (widths ``reassemble_channels``) used
            instead of the ViT (e.g. :class:`~mindcv_lseg.models.resnet_encoder.ResNetEncoder`); the ViT arguments
            are then ignored.
        impl: "auto" (default: "lean" on CPU, "native" on Ascend/GPU), "native" (MindSpore's and mindcv's own
            cells, autodiff) or "lean" (CPU workarounds); same parameters either way, see
            :mod:`mindcv_lseg.models.ops_impl`. The resolved choice is :attr:`impl`.

    Inputs of ``construct``:
        x: float32 [B, 3, H, W], normalised as ``(rgb/255 - 0.5)/0.5``; H and W multiples of 32.
        text_features: float32 [N, embed_dim] raw text features from :meth:`encode_text` (normalised inside), shared
            by the batch; or [B, N, embed_dim]: sample b is compared with its own N labels (zero-shot episodes).

    Output: float32 logits [B, N, H, W] = cosine(pixel, label) / 0.07 (channel order = label order).
    """

    TEXT_MIN_LENGTH = 4
    TEXT_BATCH = 32

    def __init__(
        self,
        image_size: int = 384,
        patch_size: int = 16,
        vit_dim: int = 1024,
        vit_depth: int = 24,
        vit_heads: int = 16,
        hooks: Sequence[int] = (5, 11, 17, 23),
        reassemble_channels: Sequence[int] = (256, 512, 1024, 1024),
        features: int = 256,
        text_width: int = 512,
        text_layers: int = 12,
        text_heads: int = 8,
        embed_dim: int = 512,
        readout: str = "project",
        arch_option: int = 0,
        block_depth: int = 0,
        activation: str = "lrelu",
        vocab_size: int = 49408,
        context_length: int = 77,
        weight_init: bool = True,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        recompute: bool = False,
        image_encoder: Optional[nn.Cell] = None,
        impl: str = "auto",
    ):
        super().__init__()
        self.impl = current_impl(impl)
        self.amp_level = "O0"  # set by mindcv_lseg.models.amp.auto_mixed_precision
        self.embed_dim = embed_dim
        self.context_length = context_length
        self.logit_scale = LOGIT_SCALE
        if image_encoder is None:
            image_encoder = LSegImageEncoder(
                image_size,
                patch_size,
                vit_dim,
                vit_depth,
                vit_heads,
                hooks,
                reassemble_channels,
                readout,
                weight_init,
                drop_rate,
                drop_path_rate,
                self.impl,
            )
        self.encoder = image_encoder
        self.recompute_blocks = bool(recompute)
        if recompute:
            blocks = getattr(getattr(image_encoder, "vit", None), "blocks", None)
            if blocks is None:
                raise ValueError(
                    f"recompute=True recomputes the ViT blocks, but the image encoder {type(image_encoder).__name__} "
                    f"has none; leave recompute off for this model"
                )
            for block in blocks:
                block.recompute()
        self.scratch = LSegScratch(
            reassemble_channels, features, embed_dim, arch_option, block_depth, activation, self.impl
        )
        self.clip_text = CLIPTextEncoder(
            vocab_size, context_length, text_width, text_layers, text_heads, embed_dim, self.impl
        )
        self.similarity = cosine_logits(self.logit_scale, self.impl)
        self.upsample = BilinearResize(align_corners=True, impl=self.impl)  # the logits' x2, align_corners=True
        for param in self.clip_text.get_parameters():
            param.requires_grad = False  # frozen: never trained, never in an optimizer

    @staticmethod
    def check_input_size(height: int, width: int) -> None:
        """Raise ``ValueError`` unless both sides are multiples of 32 (the decoder's fusion needs it)."""
        if height % INPUT_MULTIPLE or width % INPUT_MULTIPLE or height <= 0 or width <= 0:
            raise ValueError(
                f"LSeg needs an input whose height and width are positive multiples of {INPUT_MULTIPLE}, got "
                f"{height}x{width}; resize or pad the image (e.g. to "
                f"{-(-height // INPUT_MULTIPLE) * INPUT_MULTIPLE}x{-(-width // INPUT_MULTIPLE) * INPUT_MULTIPLE}) "
                f"or use the sliding-window inference in mindcv_lseg.eval."
            )

    def pixel_embeddings(self, x: Tensor) -> Tensor:
        """Unnormalised per-pixel embeddings ``head1(path_1)``: [B, 3, H, W] -> [B, embed_dim, H/2, W/2]."""
        self.check_input_size(x.shape[2], x.shape[3])
        return self.scratch(self.encoder(x)).astype(ms.float32)  # float16 under mixed precision (amp.py)

    def forward_features(self, x: Tensor) -> Tensor:
        """L2-normalised per-pixel embeddings: [B, 3, H, W] -> [B, embed_dim, H/2, W/2]."""
        return self.similarity.normalize(self.pixel_embeddings(x), 1)

    def construct(self, x: Tensor, text_features: Tensor) -> Tensor:
        pixels = self.pixel_embeddings(x)
        text = text_features
        if text.ndim == 2:  # one label set for the whole batch
            text = ops.broadcast_to(text.expand_dims(0), (pixels.shape[0], -1, -1))  # [B, N, C]
        logits = self.scratch.regularize(self.similarity(pixels, text))  # [B, N, H/2, W/2]
        return self.upsample(logits, 2 * logits.shape[2], 2 * logits.shape[3])

    def tokenize(self, labels: Union[str, Iterable[str]], truncate: bool = False) -> np.ndarray:
        """CLIP BPE ids int32 [N, context_length] for a label or a list of labels."""
        labels = [labels] if isinstance(labels, str) else list(labels)
        return tokenize(labels, context_length=self.context_length, truncate=truncate)

    def encode_text(self, labels: Union[str, Iterable[str]], truncate: bool = False) -> Tensor:
        """Raw CLIP text features (before L2 normalisation): float32 Tensor [N, embed_dim].

        The causal text transformer runs only over the columns up to the last end token, rounded up to a power
        of two (at least :attr:`TEXT_MIN_LENGTH`): the result is the same as over all 77 positions, several
        times faster for short labels. Labels are embedded in batches of at most :attr:`TEXT_BATCH` rows, each padded to
        a power of two, so GRAPH mode compiles a handful of shapes whatever the number of labels, and the memory
        the compiled graph holds stays small (150 labels in one graph would hold ~1.8 GB).
        """
        tokens = self.tokenize(labels, truncate=truncate)
        count = tokens.shape[0]
        if count == 0:
            raise ValueError("encode_text needs at least one label")
        tokens = tokens[:, : used_text_length(tokens, self.TEXT_MIN_LENGTH)]
        parts = []
        for start in range(0, count, self.TEXT_BATCH):
            chunk = tokens[start : start + self.TEXT_BATCH]
            rows = 1 << (len(chunk) - 1).bit_length()  # next power of two, at most TEXT_BATCH
            if rows > len(chunk):
                chunk = np.concatenate((chunk, np.repeat(chunk[-1:], rows - len(chunk), axis=0)))
            parts.append(self.clip_text(Tensor(chunk, ms.int32))[: min(self.TEXT_BATCH, count - start)])
        return parts[0] if len(parts) == 1 else ops.concat(parts, axis=0)


def _create_lseg(name: str, pretrained: bool, **kwargs) -> LSeg:
    """Build the entry ``name`` from :data:`ARCH_CFGS`, with ``kwargs`` overriding its architecture.

    mindcv's ``create_model`` arguments: ``num_classes`` is accepted and ignored (the classes are the labels given
    at run time: ``net(x, net.encode_text(labels))`` has one output channel per label); ``in_channels`` must be 3;
    ``drop_rate`` / ``drop_path_rate`` go to the ViT image encoder; ``features_only`` is not supported;
    ``recompute=True`` trades training time for memory (see :class:`LSeg`).
    """
    if kwargs.pop("features_only", False):
        raise ValueError(
            f"{name}: features_only=True is not supported (LSeg is a dense model, not a classification backbone). "
            f"Use net.forward_features(x) for the per-pixel embeddings [B, embed_dim, H/2, W/2], or "
            f"net.encoder(x) for the four reassembled ViT feature maps."
        )
    for key in ("drop_rate", "drop_path_rate", "recompute"):
        if kwargs.get(key) is None:
            kwargs.pop(key, None)
    if pretrained:
        raise ValueError(
            f"{name}: no weights can be downloaded. Convert the official PyTorch checkpoint with "
            f"`python tools/convert.py --model {name} --src FILE --dst OUT.ckpt` and pass "
            f"checkpoint_path='OUT.ckpt' to mindcv.create_model."
        )
    kwargs.pop("num_classes", None)  # ignored: open vocabulary, the classes are the labels given at run time
    in_channels = kwargs.pop("in_channels", 3)
    if in_channels != 3:
        raise ValueError(f"{name} takes RGB input (in_channels=3), got in_channels={in_channels}")
    cfg = dict(ARCH_CFGS[name])
    cfg.update(kwargs)
    net = LSeg(**cfg)
    net.model_name = name  # the registry entry (used for messages such as compile-time estimates)
    return net


@register_model
def lseg_vitl16_384(pretrained: bool = False, **kwargs) -> LSeg:
    """LSeg with a ViT-L/16 (384) image encoder and the CLIP ViT-B/32 text encoder (official demo architecture)."""
    return _create_lseg("lseg_vitl16_384", pretrained, **kwargs)


@register_model
def lseg_vitb32(pretrained: bool = False, **kwargs) -> LSeg:
    """LSeg with a ViT-B/32 (384) image encoder and the CLIP ViT-B/32 text encoder."""
    return _create_lseg("lseg_vitb32", pretrained, **kwargs)


@register_model
def lseg_tiny_test(pretrained: bool = False, **kwargs) -> LSeg:
    """A tiny LSeg (ViT 64-wide, 4 blocks; 64-wide 2-layer text tower) for tests and the toy quickstart only."""
    return _create_lseg("lseg_tiny_test", pretrained, **kwargs)


def _install_checkpoint_loader() -> None:
    """Make ``mindcv.create_model(name, checkpoint_path=...)`` strict for LSeg networks.

    mindcv's loader silently ignores a missing file and loads non-strictly. For LSeg networks the path is loaded
    with :func:`mindcv_lseg.checkpoint.load_into_net` instead: a missing file, a file that is not a checkpoint, or
    missing / unexpected / mis-shaped parameters raise a clear error. Other models keep mindcv's behaviour.
    """
    from mindcv.models import model_factory

    original = model_factory.load_model_checkpoint
    if getattr(original, "_lseg_strict", False):
        return

    def load_model_checkpoint(model, checkpoint_path="", ema=False, auto_mapping=False):
        if isinstance(model, LSeg):
            from ..checkpoint import load_into_net

            load_into_net(model, checkpoint_path, strict=True)
            return None
        return original(model, checkpoint_path, ema, auto_mapping)

    load_model_checkpoint._lseg_strict = True
    model_factory.load_model_checkpoint = load_model_checkpoint


_install_checkpoint_loader()
