"""``/openapi.json`` that tells the truth about answers (docs/protocol.md §3).

Handlers read their bodies themselves (one JSON error shape, byte limits), so FastAPI's
generated schema knows only "200" and a 422 this server never sends. Here every operation
documents the one error shape for the statuses the protocol uses, the 200 body's real media
type, and no 422. (Checked against a running server by tests/server/test_openapi_schema.py.)
"""

from __future__ import annotations

from typing import Any

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "error"],
    "additionalProperties": False,
    "properties": {
        "type": {"type": "string", "enum": ["error"]},
        "error": {
            "type": "object",
            "required": ["type", "message"],
            "additionalProperties": False,
            "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
        },
    },
}

ERROR_STATUSES = {
    "400": "Invalid request (invalid_request_error)",
    "401": "Missing, unknown, expired or revoked credential (authentication_error)",
    "403": "Not allowed: role, policy or CSRF (permission_error, policy_denied)",
    "404": "No such resource in your organisation (not_found_error)",
    "409": "Conflict (conflict_error, epoch_superseded, already_archived, already_resolved)",
    "410": "Gone (environment_expired, work_gone)",
    "413": "Payload too large (payload_too_large)",
    "429": "Rate limited (rate_limit_error; Retry-After)",
}

# 200 bodies that are not JSON
MEDIA_TYPES = {
    "/metrics": "text/plain",
    "/api/oauth/files/{file_uuid}/content": "*/*",  # the uploaded file's own type
    "/v1/code/sessions/{session_id}/worker/events/stream": "text/event-stream",
    "/v1/session_ingress/ws/{session_id}/worker/events/stream": "text/event-stream",
    "/v2/session_ingress/ws/{session_id}/worker/events/stream": "text/event-stream",
}


def _error_response(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def document_responses(schema: dict[str, Any]) -> dict[str, Any]:
    """Rewrite FastAPI's ``responses`` of every operation (in place; returns ``schema``)."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    components["Error"] = ERROR_SCHEMA
    for path, operations in schema.get("paths", {}).items():
        media = MEDIA_TYPES.get(path, "application/json")
        for operation in operations.values():
            ok = {"description": "Success", "content": {media: {"schema": {}}}}
            responses: dict[str, Any] = {"200": ok}
            responses.update({code: _error_response(text) for code, text in ERROR_STATUSES.items()})
            if path == "/readyz":
                responses["503"] = {"description": "Starting or shutting down",
                                    "content": {"application/json": {"schema": {}}}}
            operation["responses"] = responses
    return schema
