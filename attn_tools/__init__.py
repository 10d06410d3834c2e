"""Tools over stored runs: the run schema, the gate, the report and the multi-GPU runner.

They read and write pytest-benchmark JSON and never import torch, so they work on a laptop
or a CI runner without a GPU, like `pytest-benchmark compare` does. The engine that produces
the runs (cells, parity, timing, workloads) is `attn_bench`.
"""
