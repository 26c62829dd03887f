"""Training: dataset tools and trainers. Beside the runtime: nothing in serve/engine/models imports it."""
