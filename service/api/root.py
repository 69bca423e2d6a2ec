from fastapi import APIRouter
from pydantic import BaseModel

router = APIRouter(tags=["root"])


class Greeting(BaseModel):
    message: str


GREETING = Greeting(message="Hello, ASGI with FastAPI!")


@router.get("/", response_model=Greeting)
async def read_root() -> Greeting:
    return GREETING
