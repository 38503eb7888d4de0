"""The outside world: applications, endpoints and their secrets, API keys, signing, transport."""
