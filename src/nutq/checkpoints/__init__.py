"""Finding, downloading and making checkpoint directories in the official file layout."""
