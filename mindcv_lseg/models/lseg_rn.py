"""``lseg_rn101``: LSeg with mindcv's ResNet-101 image encoder (the zero-shot networks of the paper, Table 1/2).

The four ResNet stages (256/512/1024/2048 channels at strides 4-32) feed the DPT decoder directly (no reassemble);
the text tower is CLIP ViT-B/32's, frozen. Inputs are normalised with the ImageNet mean/std (``default_cfg``).
Zero-shot use: labels ``["others", class_name]`` per sample, see :mod:`mindcv_lseg.eval.zeroshot`.
"""

from mindcv.models.registry import register_model

from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD
from .lseg import LSeg
from .ops_impl import current_impl
from .resnet_encoder import ResNetEncoder

__all__ = ["lseg_rn101"]


def _cfg(url="", **kwargs):
    return {
        "url": url,
        "num_classes": 0,  # open vocabulary: the classes are the labels passed at run time
        "input_size": (3, 480, 480),
        "mean": IMAGENET_MEAN,  # x = (rgb/255 - mean) / std
        "std": IMAGENET_STD,
        "first_conv": "encoder.resnet.conv1",
        "classifier": "scratch.head1",
        **kwargs,
    }


default_cfgs = {
    "lseg_rn101": _cfg(
        text_encoder="CLIP ViT-B/32",
        official_checkpoint=(
            "pascal_fold{0..3}.ckpt, coco_fold{0..3}.ckpt, fss_rn101.ckpt (isl-org/lang-seg zero-shot models, "
            "convert with tools/convert.py)"
        ),
    ),
}

RN101_ARCH = dict(layers=(3, 4, 23, 3), features=256, text_width=512, text_layers=12, text_heads=8, embed_dim=512)


@register_model
def lseg_rn101(pretrained: bool = False, **kwargs) -> LSeg:
    """LSeg with mindcv's ResNet-101 image encoder and the CLIP ViT-B/32 text encoder (zero-shot checkpoints).

    Same API as the ViT entries: ``net.encode_text(labels)``, ``net(x, text_features)``, ``net.forward_features(x)``;
    x is normalised with the ImageNet mean/std, H and W multiples of 32.
    """
    if pretrained:
        raise ValueError(
            "lseg_rn101: no weights can be downloaded. Convert a released zero-shot checkpoint with "
            "`python tools/convert.py --model lseg_rn101 --src pascal_fold0.ckpt --dst OUT.ckpt` and pass "
            "checkpoint_path='OUT.ckpt' to mindcv.create_model."
        )
    kwargs.pop("num_classes", None)
    kwargs.pop("weight_init", None)  # only the ViT has a slow initialisation to skip
    in_channels = kwargs.pop("in_channels", 3)
    if in_channels != 3:
        raise ValueError(f"lseg_rn101 takes RGB input (in_channels=3), got in_channels={in_channels}")
    cfg = dict(RN101_ARCH)
    cfg.update(kwargs)
    layers = cfg.pop("layers")
    impl = current_impl(cfg.pop("impl", "auto"))
    return LSeg(
        image_encoder=ResNetEncoder(layers, impl), reassemble_channels=ResNetEncoder.OUT_CHANNELS, impl=impl, **cfg
    )
