"""Whole jobs: finetune (optional) -> propagate -> ensemble for a clip, and for a workspace of clips."""
