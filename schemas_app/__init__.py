"""Event types, their versioned JSON Schemas, and strict validation of incoming events."""
