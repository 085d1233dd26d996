"""mindcv_lseg.text"""
from .tokenizer import SimpleTokenizer, tokenize
