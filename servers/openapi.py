"""The OpenAPI 3.1 description of the HTTP endpoints, served at ``GET /openapi.json``.

Hand-written next to the routes (``servers/app.py``) from docs/PROTOCOL.md, so that it says what
the contract says, error bodies included; ``tests/test_openapi.py`` checks that every route
of the application is in it and runs schemathesis against a real server.

What OpenAPI cannot say: ``/rooms/{room}/stream`` is a never-ending ``text/event-stream``
and ``/rooms/{room}/ws`` is a WebSocket upgrade (101); both are described by their refusals,
which are plain HTTP. CORS preflights (``OPTIONS``, any path) are answered ahead of the
router and are not listed.
"""

from __future__ import annotations

from typing import Any

from wirewise.protocol import DEFAULT_MAX_TEXT, ERROR_CODES, MAX_CURSOR

ROOM = "^[A-Za-z0-9_-]{1,64}$"
USER = "^[A-Za-z0-9_-]{1,32}$"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    """docs/PROTOCOL.md's error body for each status (the code says which refusal it is)."""
    said = {
        400: "bad_json, bad_message, unknown_type, bad_room or bad_cursor",
        401: "unauthorized: a missing, forged or expired token",
        403: "forbidden_origin: a browser origin that is not allowed",
        413: "message_too_large: text over the limit or a body over max_body",
        429: "rate_limited (with Retry-After)",
        503: "too_many_connections, or unavailable (a shared broker did not answer)",
    }
    return {str(s): _json(_ref("Error"), said[s]) for s in statuses}


ROOM_PARAM = {
    "name": "room",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": ROOM},
}
CURSOR = {"type": "integer", "minimum": 0, "maximum": MAX_CURSOR}
AFTER_PARAM = {
    "name": "after",
    "in": "query",
    "required": False,
    "description": "Replay events with an id greater than this; a non-integer is 400 bad_cursor.",
    "schema": CURSOR,
}
LAST_EVENT_ID = {
    "name": "Last-Event-ID",
    "in": "header",
    "required": False,
    "description": "Wins over `after` (a browser reconnects to its original URL).",
    "schema": {"type": "string", "pattern": "^[0-9]{1,19}$"},
}
SECURED: list[dict[str, list[str]]] = [{"bearer": []}, {"query_token": []}, {"cookie": []}]

EVENT = {
    "type": "object",
    "required": ["type"],
    "properties": {
        "type": {"enum": ["new_message", "user_joined", "user_left", "gap"]},
        "id": CURSOR,
        "room": {"type": "string"},
    },
}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["type", "code", "detail"],
        "properties": {
            "type": {"const": "error"},
            "code": {"enum": sorted(ERROR_CODES)},
            "detail": {"type": "string"},
        },
    },
    "Login": {
        "type": "object",
        "required": ["user"],
        "properties": {"user": {"type": "string", "pattern": USER}},
    },
    "Token": {
        "type": "object",
        "required": ["token"],
        "properties": {"token": {"type": "string"}},
    },
    "SendMessage": {
        "type": "object",
        "required": ["type", "text"],
        "properties": {
            "type": {"const": "send_message"},
            "room": {"type": "string", "pattern": ROOM, "description": "must match the path"},
            "text": {"type": "string", "minLength": 1, "maxLength": DEFAULT_MAX_TEXT},
            "client_msg_id": {"type": "string", "maxLength": 64},
            "sent_at": {"type": "integer", "minimum": 0},
        },
    },
    "Id": {"type": "object", "required": ["id"], "properties": {"id": CURSOR}},
    "Event": EVENT,
    "Poll": {
        "type": "object",
        "required": ["events", "last_id"],
        "properties": {"events": {"type": "array", "items": _ref("Event")}, "last_id": CURSOR},
    },
}


def schema() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "wirewise chat",
            "version": "1",
            "description": "The HTTP endpoints of the wirewise chat protocol (one application, every transport).",
        },
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "query_token": {"type": "apiKey", "in": "query", "name": "token"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": "wirewise_token"},
            },
        },
        "paths": {
            "/login": {
                "post": {
                    "summary": "A token for a user name (also set as the wirewise_token cookie)",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("Login")}},
                    },
                    "responses": {
                        "200": _json(_ref("Token"), "the token"),
                        **_errors(400, 403, 413),
                    },
                },
                "get": {
                    "summary": "The same for servers that read GET only (the bare websockets one)",
                    "parameters": [
                        {
                            "name": "user",
                            "in": "query",
                            "required": True,
                            "schema": {"type": "string", "pattern": USER},
                        }
                    ],
                    "responses": {"200": _json(_ref("Token"), "the token"), **_errors(400, 403)},
                },
            },
            "/rooms/{room}/messages": {
                "post": {
                    "summary": "Send a message (idempotent per client_msg_id)",
                    "security": SECURED,
                    "parameters": [ROOM_PARAM],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("SendMessage")}},
                    },
                    "responses": {
                        "201": _json(_ref("Id"), "stored"),
                        "200": _json(_ref("Id"), "a retry: the id stored the first time"),
                        **_errors(400, 401, 403, 413, 429, 503),
                    },
                }
            },
            "/rooms/{room}/events": {
                "get": {
                    "summary": "Short poll; with `wait`, a long poll held until an event",
                    "security": SECURED,
                    "parameters": [
                        ROOM_PARAM,
                        AFTER_PARAM,
                        {
                            "name": "wait",
                            "in": "query",
                            "required": False,
                            "description": "Seconds to hold, capped at longpoll_max_wait (30).",
                            "schema": {"type": "number", "minimum": 0},
                        },
                    ],
                    "responses": {
                        "200": _json(_ref("Poll"), "events after the cursor and the last id"),
                        **_errors(400, 401, 403, 503),
                    },
                }
            },
            "/rooms/{room}/stream": {
                "get": {
                    "summary": "Server-sent events: replay after the cursor, then live",
                    "security": SECURED,
                    "parameters": [ROOM_PARAM, AFTER_PARAM, LAST_EVENT_ID],
                    "responses": {
                        "200": {
                            "description": "`id:`, `event:`, `data:` per event; never ends",
                            "content": {"text/event-stream": {"schema": {"type": "string"}}},
                        },
                        **_errors(400, 401, 403, 503),
                    },
                }
            },
            "/rooms/{room}/ws": {
                "get": {
                    "summary": "WebSocket upgrade: one JSON message per frame, both ways",
                    "security": SECURED,
                    "parameters": [ROOM_PARAM, AFTER_PARAM, LAST_EVENT_ID],
                    "responses": {
                        "101": {"description": "switching protocols"},
                        "404": {
                            "description": "a plain GET without the upgrade",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        **_errors(400, 401, 403, 503),
                    },
                }
            },
            "/healthz": {
                "get": {
                    "summary": "200 when the server can serve",
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["ok"],
                                "properties": {"ok": {"const": True}},
                            },
                            "up",
                        )
                    },
                }
            },
            "/stats": {
                "get": {
                    "summary": "Connections per transport, events stored, deliveries, drops",
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["uptime_s", "connections", "events_stored"],
                                "properties": {
                                    "uptime_s": {"type": "number"},
                                    "connections": {
                                        "type": "object",
                                        "additionalProperties": {"type": "integer"},
                                    },
                                    "events_stored": {"type": "integer"},
                                },
                            },
                            "counters",
                        )
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1")},
                }
            },
        },
    }
