"""Speech datasets for training: manifest, validation, preparation, and the prepared-dataset reader."""
