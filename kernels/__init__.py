"""Low-bit kernels: the canonical packed weight format (numpy reference), CUDA sources and their pycuda loader (installed as edgeinf.kernels)."""
