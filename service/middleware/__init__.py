"""Pure ASGI middleware only: `BaseHTTPMiddleware` costs FastAPI most of its throughput."""
