"""Library code behind the three scripts: parts plan, memory bank, propagation, ensemble, I/O."""
