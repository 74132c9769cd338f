"""The worker child of a dev run (`python -m` this): the worker under uvicorn's reloader."""

from __future__ import annotations

from {{ cookiecutter.package_name }}.messaging.worker import serve_worker
from {{ cookiecutter.package_name }}.settings import load_settings

if __name__ == "__main__":
    serve_worker(load_settings(), reload=True)
