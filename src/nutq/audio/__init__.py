"""Audio leaf utilities: feature front ends, resampling, PCM/WAV helpers."""
