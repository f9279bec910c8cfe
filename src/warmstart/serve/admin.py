"""The endpoints that change what `warmstart serve` serves, and who may call the server.

- LoRA adapters at runtime, vLLM's API (`--enable-lora`): `POST /v1/load_lora_adapter` {"lora_name",
  "lora_path", "load_inplace"?} and `POST /v1/unload_lora_adapter` {"lora_name"}; a loaded adapter is a
  model of its own in `/v1/models` and in requests' `model`.
- Full-weight reload, SGLang's API (`--enable-weight-updates`): `POST /update_weights_from_disk`
  {"model_path", "weight_version"?} and `GET /get_model_info`.
- `--api-key`: `Authorization: Bearer KEY` on everything but /health and /metrics.

Files are read and checked here, in the handler's thread; the change itself is a `Control` that the
engine's worker runs between slices (`engine.py`), so only the worker ever touches the model.
"""

from __future__ import annotations

import hmac

from .engine import Control, Job
from .lora import AdapterError, read_adapter
from .request import ApiError
from .weights import WeightsError, copy_weights, read_weights

OPEN_PATHS = {"/health", "/metrics"}  # what a load balancer or Prometheus reads without the key
WEIGHT_PATHS = {"/update_weights_from_disk", "/get_model_info"}


class SglangError(ApiError):
    """A weight update refused, in SGLang's body: {"success": false, "message": why}."""

    def body(self) -> dict:
        return {"success": False, "message": self.message}


def authorize(app, path: str, header: str | None) -> None:
    if app.api_key is None or path in OPEN_PATHS:
        return
    scheme, _, key = (header or "").partition(" ")
    # compare_digest: the time taken does not tell how much of a guessed key was right
    if scheme.lower() != "bearer" or not hmac.compare_digest(key.strip().encode(), app.api_key.encode()):
        raise ApiError(401, "a valid API key is required: Authorization: Bearer KEY", code="invalid_api_key")


def require(enabled: bool, flag: str, path: str) -> None:
    if not enabled:
        raise ApiError(404, f"{path} is off: start the server with {flag}", code="not_found")


def fields(body: dict, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> list[str]:
    unknown = sorted(set(body) - {*required, *optional})
    if unknown:
        raise ApiError(400, f"unsupported field(s): {', '.join(unknown)}", param=unknown[0])
    for key in required:
        if not isinstance(body.get(key), str) or not body[key]:
            raise ApiError(400, f"{key}: a non-empty string is required", param=key)
    return [body[key] for key in required]


def load_adapter(app, body: dict) -> str:
    """vLLM's load; with `load_inplace: true` a loaded name gets the new weights (a new policy, same name)."""
    require(app.enable_lora, "--enable-lora", "/v1/load_lora_adapter")
    name, path = fields(body, ("lora_name", "lora_path"), ("load_inplace",))
    inplace = body.get("load_inplace", False)
    if not isinstance(inplace, bool):
        raise ApiError(400, "load_inplace: must be true or false", param="load_inplace")
    try:
        _check_free(app, name, inplace)  # before reading any file
        try:
            adapter = read_adapter(path, app.linears)
        except AdapterError as exc:
            raise ApiError(400, f"lora_path: {exc}", param="lora_path") from None

        def install() -> None:  # in the worker; a second load of the name may have got there first
            _check_free(app, name, inplace)
            app.engine.adapters.add(name, adapter)

        def running_on_it(job: Job) -> bool:  # replaced in place: its running requests finish on the old one
            return inplace and job.adapter == name

        app.engine.submit(Control(install, running_on_it)).result()
    except ApiError:
        app.metrics.adapter_loads.labels("error").inc()
        raise
    app.metrics.adapter_loads.labels("ok").inc()
    return f"Success: LoRA adapter '{name}' added successfully."  # vLLM's answer, word for word


def unload_adapter(app, body: dict) -> str:
    require(app.enable_lora, "--enable-lora", "/v1/unload_lora_adapter")
    [name] = fields(body, ("lora_name",))

    def remove() -> None:  # in the worker; a second unload may have got there first
        _check_loaded(app, name)
        app.engine.adapters.remove(name)

    def running_on_it(job: Job) -> bool:  # its requests under way finish first; those queued after get a 404
        return job.adapter == name

    try:
        _check_loaded(app, name)
        app.engine.submit(Control(remove, running_on_it)).result()
    except ApiError:
        app.metrics.adapter_unloads.labels("error").inc()
        raise
    app.metrics.adapter_unloads.labels("ok").inc()
    return f"Success: LoRA adapter '{name}' removed successfully."


def _check_free(app, name: str, inplace: bool = False) -> None:
    if name == app.name:  # the base model: neither unloaded nor replaced, so no advice to do either
        raise ApiError(400, f"lora_name: {name!r} is the base model's name; choose another", param="lora_name")
    if name in app.engine.adapters.loaded and not inplace:
        raise ApiError(
            400, f"lora_name: {name!r} is already a served model; unload it first or load_inplace", param="lora_name"
        )


def _check_loaded(app, name: str) -> None:
    if name not in app.engine.adapters.loaded:
        raise ApiError(404, f"the LoRA adapter {name!r} is not loaded", code="model_not_found", param="lora_name")


def update_weights(app, body: dict) -> dict:
    require(app.enable_weight_updates, "--enable-weight-updates", "/update_weights_from_disk")
    try:
        [path] = fields(body, ("model_path",), ("weight_version", "flush_cache"))
        version = body.get("weight_version")
        if version is not None and not isinstance(version, str):
            raise ApiError(400, "weight_version: must be a string", param="weight_version")
        weights = read_weights(path, app.weight_shapes, app.weight_ties)
    except (ApiError, WeightsError) as exc:
        app.metrics.weight_updates.labels("error").inc()
        raise SglangError(400, str(exc)) from None

    def install() -> None:
        copy_weights(app.engine.model, weights)
        app.model_path = path
        if version is not None:  # as SGLang: an update without a version keeps the last one
            app.weight_version = version

    def anything(job: Job) -> bool:  # every running row finishes on the weights it began with
        return True

    app.engine.submit(Control(install, anything)).result()
    app.metrics.weight_updates.labels("ok").inc()
    return {"success": True, "message": f"weights loaded from {path}", "weight_version": app.weight_version}


def model_info(app) -> dict:
    require(app.enable_weight_updates, "--enable-weight-updates", "/get_model_info")
    return {"model_path": app.model_path, "weight_version": app.weight_version, "is_generation": True}
