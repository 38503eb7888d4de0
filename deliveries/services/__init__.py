"""Writes of the delivery engine, one module per concern (see docs/ARCHITECTURE.md).

Import a name from the module that owns it; this package re-exports nothing."""
