"""Online finetuning on a clip's keyframes: optimiser set-up, the training step, the loop."""
