"""nutq: real-time Arabic text-to-speech on Chatterbox Multilingual.

Importing this package is cheap: heavy modules (torch models, the engine) load on first use.
"""

__version__ = "0.1.0"

__all__ = ["TTS", "FlowOptions", "__version__"]


def __getattr__(name: str):
    # Lazy: `import nutq` stays cheap; the model stack loads on first use of nutq.TTS.
    if name == "TTS":
        from .tts import TTS

        return TTS
    if name == "FlowOptions":
        from .engine.flow_options import FlowOptions

        return FlowOptions
    raise AttributeError(f"module 'nutq' has no attribute {name!r}")
