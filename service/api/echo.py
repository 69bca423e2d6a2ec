"""A validated JSON round trip: the shape every real endpoint of the service takes."""

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

router = APIRouter(tags=["echo"])


class Echo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str = Field(max_length=16_384, description="Text sent back unchanged.")


@router.post("/echo", response_model=Echo)
async def echo(body: Echo) -> Echo:
    return body
