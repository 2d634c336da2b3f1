"""A bare JSON endpoint: the benchmarks' reference for what the web stack alone costs."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request, Response

router = APIRouter(include_in_schema=False)
_REPLY = orjson.dumps({"Id": 0, "StatusCode": 200, "Message": "Email sent."})


@router.post("/_reference/bare")
async def bare(request: Request) -> Response:
    """Parse the body and answer a fixed reply: no rules, no database."""
    data = orjson.loads(await request.body())
    if not isinstance(data, dict):
        return Response(b"{}", status_code=400, media_type="application/json")
    return Response(_REPLY, headers={"content-type": "application/json;charset=utf-8"})
