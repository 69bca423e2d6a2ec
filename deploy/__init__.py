"""Launch profiles: each turns the one `Settings` into what one server runs (a LaunchConfig)."""
