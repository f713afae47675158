"""Per-organ features: pure, event-time modules the worker composes per patient."""
