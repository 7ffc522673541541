"""Triton kernels of lstm-triton (installed as ``lstm_triton.kernels``): @triton.jit code only."""
