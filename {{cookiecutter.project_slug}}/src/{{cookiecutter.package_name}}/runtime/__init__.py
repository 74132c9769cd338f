"""Running the service: uvicorn with a graceful stop, the listening socket, the dev command."""
