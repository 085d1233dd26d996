"""mindcv_lseg.text"""

from .labels import (
    ADE20K_150,
    ADE20K_150_FULL,
    TOY_LABELS,
    LabelSet,
    get_label_set,
    list_label_sets,
    register_label_set,
)
from .tokenizer import SimpleTokenizer, tokenize
