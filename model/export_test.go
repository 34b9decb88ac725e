package model

// SetEngineMinCache sets the capacity the engine's caches start with, so
// that tests on tiny models see caches grow.
func SetEngineMinCache(e *Engine, n int) { e.minCache = n }
