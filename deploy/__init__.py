"""Launch profiles: each turns the one `Settings` into one server's native configuration."""
