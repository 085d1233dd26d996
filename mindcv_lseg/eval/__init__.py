"""mindcv_lseg.eval"""
