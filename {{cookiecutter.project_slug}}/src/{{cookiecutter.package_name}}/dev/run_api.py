"""The API child of a dev run (`python -m` this): the service under uvicorn's reloader."""

from __future__ import annotations

from {{ cookiecutter.package_name }}.runtime.server import serve
from {{ cookiecutter.package_name }}.settings import load_settings

if __name__ == "__main__":
    serve(load_settings(), reload=True)
