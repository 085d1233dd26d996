"""mindcv_lseg.data"""
