"""Reading clips, keyframe trimaps and (for finetuning) sampling training clips."""
