"""The propagation engine: parts plan, memory bank, propagator, clip driver, ensemble, result layout."""
