"""The foundation: errors, atomic file writes, logging, devices, precision, torchrun. Imports nothing
else of the project."""
