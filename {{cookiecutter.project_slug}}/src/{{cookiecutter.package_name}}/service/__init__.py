"""The service's skeleton: the middleware, the extension points (`parts`), problems, OpenAPI."""
