"""The ASGI entry point servers import: `service.main:app`.

This is the only module that builds `Settings` at import time.
"""

from service.app import create_app
from service.settings import get_settings

app = create_app(get_settings())
