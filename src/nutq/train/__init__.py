"""Training: datasets (`data/`), the generic loop (`loop/`) and the trainers (`t3/`, ...).

Nothing in the runtime imports this package; it imports the runtime (`models`, `engine`, `text`,
`audio`, `checkpoints`) to train and evaluate the same modules that serve.
"""
