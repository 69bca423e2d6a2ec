"""`GET /`: the service's greeting, written as any route of yours would be."""

from fastapi import APIRouter
from pydantic import BaseModel

router = APIRouter(tags=["root"])

MESSAGE = "Hello, ASGI with FastAPI!"


class Greeting(BaseModel):
    message: str


@router.get("/")
async def read_root() -> Greeting:
    return Greeting(message=MESSAGE)
