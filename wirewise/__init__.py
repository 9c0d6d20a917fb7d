"""wirewise: does this application really need WebSockets? Measure it."""

__version__ = "0.1.0"
