"""mindcv_lseg.data: segmentation datasets (toy, ADE20K, folder), joint transforms and the MindSpore loader.

from mindcv_lseg.data import create_seg_dataset, create_seg_loader
train = create_seg_dataset("toy", "data/toy", "train")                 # generated on first use
loader = create_seg_loader(train, batch_size=8, shuffle=True, drop_remainder=True)
for image, mask in loader:   # float32 [8, 3, 128, 128], int32 [8, 128, 128]
    ...
"""

from .dataset_factory import DATASET_NAMES, DEFAULT_SIZES, create_seg_dataset
from .datasets import ADE20KSegDataset, FolderSegDataset, SegDataset
from .io import SegDataError, map_mask, read_image, read_mask
from .loader import EpochShardSampler, SegLoader, create_seg_loader
from .transforms import TrainTransform, ValTransform, create_seg_transform, normalize

_TOY_NAMES = ("TOY_CLASSES", "make_toy_dataset", "make_toy_scene")


def __getattr__(name):
    # lazy: importing .toy here would make ``python -m mindcv_lseg.data.toy`` warn (module imported twice)
    if name in _TOY_NAMES:
        from . import toy

        return getattr(toy, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
