//! The `OpenAPI` description of the status API.

use serde_json::{json, Value};

/// The `OpenAPI` 3.0 document.
pub fn document() -> Value {
    json!({
        "openapi": "3.0.3",
        "info": {"title": "corral status API", "version": env!("CARGO_PKG_VERSION")},
        "components": {
            "schemas": {"Runner": runner_schema(), "Message": {"type": "object", "required": ["message"], "properties": {"message": {"type": "string"}}}},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}
        },
        "security": [{"bearer": []}],
        "paths": paths()
    })
}

/// The schema of one runner, as `/runners` and `/runners/{name}` return it.
fn runner_schema() -> Value {
    json!({
        "type": "object",
        "required": ["name", "repo_url", "status", "pid", "state", "busy", "restarts", "registration"],
        "properties": {
            "name": {"type": "string"},
            "repo_url": {"type": "string"},
            "status": {"type": "string", "enum": ["running", "stopped"]},
            "pid": {"type": "integer", "nullable": true},
            "state": {"type": "string", "enum": ["provisioning", "registering", "starting", "idle", "busy", "draining", "backoff", "crashloop", "error", "stopped"]},
            "busy": {"type": "boolean"},
            "job": {"type": "string", "nullable": true},
            "job_started_at": {"type": "string", "format": "date-time"},
            "last_job": {"type": "object", "properties": {
                "name": {"type": "string"}, "result": {"type": "string"},
                "duration_seconds": {"type": "integer", "nullable": true}}},
            "labels": {"type": "array", "items": {"type": "string"}},
            "restarts": {"type": "integer"},
            "last_exit_code": {"type": "integer", "nullable": true},
            "registration": {"type": "string", "enum": ["registered", "unregistered", "local-only"]},
            "version": {"type": "string"},
            "last_error": {"type": "string", "nullable": true},
            "last_error_kind": {"type": "string", "enum": ["rate_limited", "transient", "permanent"], "description": "what corral does about a failed step of its own: retry at the reset, back off, or wait for a fix"},
            "retry_at": {"type": "string", "format": "date-time", "description": "when that step is tried again"},
            "cgroup": {"type": "string", "description": "the runner's cgroup path, or `degraded (reason)`"},
            "cleanup": {"type": "string", "description": "`after every job`, `at removal (leftovers: keep)` or `degraded (reason)`"},
            "usage": {"type": "object", "properties": {
                "cpu_seconds": {"type": "number"}, "memory_bytes": {"type": "integer"},
                "memory_peak_bytes": {"type": "integer"}, "oom_kills": {"type": "integer"},
                "processes": {"type": "integer"}}},
            "limits_not_applied": {"type": "array", "items": {"type": "string"}},
            "leftovers_killed": {"type": "integer"}
        }
    })
}

/// Every route, with its answers.
fn paths() -> Value {
    let text = |description: &str| json!({"description": description, "content": {"text/plain": {"schema": {"type": "string"}}}});
    // Every route but `/healthz` and `/webhook` answers 401 without the token (when one is
    // configured), before it looks at anything else.
    let unauthorized = json!({"description": "Missing or wrong bearer token", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Message"}}}});
    json!({
        "/status": {"get": {"summary": "Everything `corral status` shows: runners, config error, GitHub budget", "responses": {
            "200": {"description": "Status", "content": {"application/json": {"schema": {"type": "object"}}}},
            "503": text("no pass yet"),
            "401": unauthorized}}},
        "/runners": {"get": {"summary": "Every runner", "responses": {
            "200": {"description": "Runners", "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/Runner"}}}}},
            "401": unauthorized}}},
        "/runners/{name}": {"get": {"summary": "One runner",
            "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}],
            "responses": {
                "200": {"description": "The runner", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Runner"}}}},
                "404": {"description": "No such runner", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Message"}}}},
                "401": unauthorized}}},
        "/healthz": {"get": {"summary": "The controller is alive", "security": [], "responses": {"200": text("ok")}}},
        "/readyz": {"get": {"summary": "Config loaded and the last pass went through", "responses": {"200": text("ready"), "503": text("not ready"), "401": unauthorized}}},
        "/metrics": {"get": {"summary": "Prometheus text format", "responses": {"200": text("metrics"), "401": unauthorized}}},
        "/webhook": {"post": {"summary": "GitHub `workflow_job` deliveries (only with api.webhook_secret_*): a queued job makes corral poll demand now",
            "security": [],
            "parameters": [{"name": "X-Hub-Signature-256", "in": "header", "required": true, "schema": {"type": "string"}}],
            "responses": {
                "202": {"description": "Signature valid; accepted"},
                "401": {"description": "Bad or missing signature; nothing changed"},
                "404": {"description": "No webhook secret configured"},
                "413": {"description": "Body larger than 2 MiB; nothing changed"}}}},
        "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI document", "content": {"application/json": {}}}, "401": unauthorized}}}
    })
}
