"""mindcv_lseg.text"""
