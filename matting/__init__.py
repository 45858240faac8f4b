"""Alpha matting of frames with trimaps (tgm.py matte): classical solvers, backgrounds, whole clips."""
