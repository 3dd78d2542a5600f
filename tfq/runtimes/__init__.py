"""What runs and reads .tflite files: the LiteRT harness, TFLite Micro, the flatbuffer reader."""
