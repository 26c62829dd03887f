"""S3Gen: speech tokens -> 24 kHz waveform (S3 tokenizer, CAMPPlus, flow encoder + CFM, HiFT)."""
