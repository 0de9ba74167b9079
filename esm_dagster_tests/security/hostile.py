"""A loopback server that answers every request badly, quoting back the credential it was sent.

What a misbehaving or malicious endpoint does: a redirect whose `Location` carries the request's
`Authorization` header, path and query; an error body that repeats them; a 200 that is not JSON.
The client must carry none of that text into logs, errors or storage.
"""

from __future__ import annotations

import orjson

from esm_dagster.sandbox._http import LoopbackEmulator, Request, Response


class HostileServer(LoopbackEmulator):
    """Answers every request badly, quoting back the credential it received."""

    mode = "invalid_json"

    def _echo(self, request: Request) -> str:
        sent = request.header("authorization") or request.header("x-api-key") or ""
        return f"you sent {sent} to {request.path}?{request.query}"

    def handle(self, request: Request) -> Response:
        echo = self._echo(request)
        if self.mode == "redirect":
            location = f"http://127.0.0.1:9/collect{request.path}?{request.query}&auth={echo}"
            return Response(302, b"", [("Location", location.replace(" ", "%20"))])
        if self.mode == "echo_error":
            text = f"invalid credential: {echo}"
            body = {
                "ok": False,
                "error": text,
                "message": text,
                "description": text,
                "detail": text,
                "error_code": 401,
                "errors": [{"field": None, "message": text}],
            }
            return Response(401, orjson.dumps(body))
        return Response(200, f"<html>not json: {echo}</html>".encode(), content_type="text/html")
