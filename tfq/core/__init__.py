"""What every stage stands on: atomic artifacts and digests, the TensorFlow/Keras 2 backend, console and CLI plumbing, paired statistics."""
