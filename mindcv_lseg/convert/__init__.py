"""mindcv_lseg.convert"""
