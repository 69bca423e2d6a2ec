"""Development-only support the test suite and `make bench` share: launching the service's
profiles as real processes on loopback and watching them, and raw connections to them.
Not part of the package or the image (pyproject.toml ships `service` and `deploy` only)."""
