"""T3 fine-tuning: the training forward and loss (`loss`), batching of prepared examples
(`batch`), freezing and LoRA (`adapters`), the trainer (`trainer`), export (`export`) and the
base-vs-tuned evaluation (`evaluate`)."""
