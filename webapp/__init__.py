"""The local web app: paint keyframe trimaps, propagate, review, correct (tgm.py app)."""
