"""How files are quantized: the table of modes and what each promises, ai-edge-quantizer recipes
(recipes/*.json), the quantization simulator, the mixed-precision search."""
