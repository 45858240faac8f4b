"""Alpha matting of frames with trimaps (matte.py): classical solvers, backgrounds, whole clips."""
