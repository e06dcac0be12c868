"""Serving over HTTP: a FastAPI app (generate with attribution, search, score, health) and a web page.

    from burrow.serve import ServeConfig, create_app
    app = create_app(model, Memory("mem"), ServeConfig(max_concurrent=4))
    # uvicorn.run(app, host="127.0.0.1", port=8000), or `burrow serve RUN --memory mem`

API, limits and the page: docs/serving.md.
"""

from typing import Any

from burrow.serve.service import ServeConfig, Service

__all__ = ["ServeConfig", "Service", "create_app", "run_server"]


def __getattr__(name: str) -> Any:
    """``create_app`` and ``run_server`` import FastAPI on first use, not when the CLI reads ServeConfig."""
    if name in ("create_app", "run_server"):
        from burrow.serve import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
