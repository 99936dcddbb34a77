"""Memory preflight: estimate one run's memory per device before any model is loaded, and refuse a
configuration that cannot fit, saying what would (bf16 weights, FSDP, a smaller evaluation batch).

An estimate, not a measurement: the parts follow the textbook accounting (weights, gradients, Adam states,
activations, KV cache, logits), with the evaluation's working set measured once (KV_TOKENS, SCORED). On an
H100, random OPT-1.3b (fp32, bf16) and OPT-2.7b (fp32) weights peaked 8-23% below the estimate in allocated
memory, while the allocator's reserve came within 5% of it. `python -m gap.memory` prints the OPT table.
"""
