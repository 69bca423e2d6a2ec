"""The FastAPI service: settings, app factory and routes."""
