"""Serving over HTTP: a FastAPI app (generate with attribution, search, score, health) and a web page.

    from burrow.serve import ServeConfig, create_app
    app = create_app(model, Memory("mem"), ServeConfig(max_concurrent=4))
    # uvicorn.run(app, host="127.0.0.1", port=8000), or `burrow serve RUN --memory mem`

API, limits and the page: docs/serving.md.
"""

from typing import TYPE_CHECKING

from burrow.lazy import lazy_exports
from burrow.serve.config import ServeConfig

if TYPE_CHECKING:
    from burrow.serve.app import create_app, run_server
    from burrow.serve.service import Service

__all__ = ["ServeConfig", "Service", "create_app", "run_server"]

#: The service imports torch and FAISS, the app FastAPI: both load on first use, not when the CLI reads ServeConfig.
__getattr__, __dir__ = lazy_exports(__name__, {"app": ["create_app", "run_server"], "service": ["Service"]})
