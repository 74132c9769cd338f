"""W3C trace propagation in and out, client spans, and OTLP export when configured."""
