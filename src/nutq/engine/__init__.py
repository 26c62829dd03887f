"""The engine: sessions, the decode loop, sampling, the alignment guard, token2wav, timings."""
