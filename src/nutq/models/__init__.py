"""Pure nn.Modules whose state dicts match the official Chatterbox files.

Models know tensors only: no threads, no request state, no I/O beyond reading weights.
"""
