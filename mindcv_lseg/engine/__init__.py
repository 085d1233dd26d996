"""mindcv_lseg.engine"""
