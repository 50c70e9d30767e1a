"""Native one-token decode for the fast engine (`kernels.c`, loaded with ctypes).

`build` compiles the kernels (make does it), `library` loads them and picks the instruction set,
`weights` keeps the GGUF's own quantized blocks in the layout the kernels read, and `decoder`
runs a decode step through them on the fast model's KV cache. Anything missing (no compiler, a
tensor type the kernels do not take, a CPU without AVX2) leaves the torch path in charge.
"""
