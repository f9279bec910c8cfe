"""`warmstart serve`: an OpenAI-compatible HTTP server over a local model. `server.py` (the app, the listening server, start-up), `handler.py` (HTTP: endpoints, each request read and answered),
`body.py` (request bodies: Content-Length or chunked), `request.py` (chat requests in), `admission.py` (what cannot fit the context is refused before it is
queued), `completions.py` (the legacy completions endpoint: scoring), `engine.py`
(the worker thread that owns the model and batches), `response.py` (responses and stream chunks out),
`admin.py` (adapter and weight endpoints, the API key), `connections.py` (the connection limit, the
deadline for a request's head, half-closed clients), `lora.py` (LoRA adapters as forward hooks),
`weights.py` (full-weight reload), `metrics.py` (/metrics).

May import lm and the core modules; nothing imports it but the CLI. See ARCHITECTURE.md.
"""
