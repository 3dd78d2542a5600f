"""What every stage stands on: atomic artifacts and digests, the TensorFlow/Keras 2 backend, settings
and flags, console output, the stage runner, paired statistics."""
