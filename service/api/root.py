from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import BaseModel

router = APIRouter(tags=["root"])


class Greeting(BaseModel):
    message: str


GREETING = Greeting(message="Hello, ASGI with FastAPI!")
# The answer never changes: render it once. FastAPI sends a returned Response as
# is, skipping per-request validation and serialization (see README, Performance).
GREETING_BODY = GREETING.model_dump_json().encode()


@router.get("/", response_model=Greeting)
async def read_root() -> Response:
    return Response(GREETING_BODY, media_type="application/json")
