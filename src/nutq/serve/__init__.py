"""The network server: protocols, per-connection audio output, operations.

Layering: `serve` drives the engine and knows sockets, formats and limits; it never touches model
tensors. Audio leaves through `serve.audio_out` (per-connection encoders, flushed per chunk).
"""
