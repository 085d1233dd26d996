"""mindcv_lseg.models"""
