"""The audit log of configuration changes: a hash chain every app appends to (the lowest layer:
it imports none of the apps)."""
