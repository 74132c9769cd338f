"""The process's life: graceful drain on SIGTERM, background tasks, the garbage collector."""
