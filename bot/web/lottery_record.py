"""GET /lottery/<id>: a lottery's published record (docs/lottery.md), for anyone to check the draw.

No personal data: the entry hashes are keyed per lottery, the seed is revealed only once drawn. The same
record as ``vaxbot lottery export``; ``vaxbot lottery verify`` checks a saved copy.
"""

from __future__ import annotations

from aiohttp import web

from bot.booking import draw, lottery
from bot.web.appkeys import SESSIONS


async def published(request: web.Request) -> web.Response:
    """The published record of one lottery, or 404."""
    async with request.app[SESSIONS]() as session:
        found = await lottery.by_public_id(session, request.match_info["lottery"])
        record = await lottery.published_record(session, found.id) if found is not None else None
    if record is None:
        return web.json_response({"error": "not_found"}, status=404)
    return web.Response(text=draw.dumps(record), content_type="application/json", charset="utf-8")


def setup_routes(app: web.Application) -> None:
    """Mount ``GET /lottery/{lottery}``."""
    app.router.add_get("/lottery/{lottery}", published)
