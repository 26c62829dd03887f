"""nutq: real-time Arabic text-to-speech on Chatterbox Multilingual.

Importing this package is cheap: heavy modules (torch models, the engine) load on first use.
"""

__version__ = "0.1.0"
