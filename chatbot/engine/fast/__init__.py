"""The fast decode path for Llama-family models: GGUF Q4_1 weights repacked exactly for torch's
int4 CPU kernel, a lean forward with a static KV cache, behind the reference Engine's interface.

model.py (FastLlama, KVCache), quantize.py (packed linear layers and handlers),
gguf_weights.py (raw GGUF blocks), loader.py (building and caching), engine.py (FastEngine and
how the runtime opens it). See docs/fast.md.
"""
