"""The audio and token clock every part of nutq shares. No imports.

S3Gen's vocoder speaks 24 kHz mono; T3 emits S3 speech tokens at 25 per second, so one token is
40 ms of audio, exactly 960 samples, and the flow decodes 2 mel frames per token (50 frames/s).
Streaming relies on these being exact: every chunk is a whole number of tokens of audio."""

SAMPLE_RATE = 24_000  # Hz, what the vocoder produces
TOKEN_RATE = 25  # S3 speech tokens per second of audio
SAMPLES_PER_TOKEN = SAMPLE_RATE // TOKEN_RATE  # 960
FRAMES_PER_TOKEN = 2  # S3Gen flow mel frames per speech token (50 frames/s)
