"""What one decoding step costs against its bounds: the model's step over a cache of random tokens, and its
parts timed alone at the step's shapes, each over every layer's own weights and cache as the step reads them
(so from memory, not from a cache that one layer's weights fit in): the layers' attention projections and
MLPs as the engine computes them, the output layer, attention over the cache; each against the machine's
matmul peak and memory read rate.

    python -m bench.decode_step [eval overrides] [+rows=32] [+width=400]

The step's FLOPs at the peak are its compute bound; the weights and the cache read once, its memory bound.
"""
import time

import hydra
import torch
from omegaconf import DictConfig
from transformers import DynamicCache

from bench.evaluation import matmul_rates, read_rate
from gap.modules.loading import load_pretrained
from gap.scoring.linear import onednn_linears
from gap.scoring.prefill import ReservedLayer


def best_seconds(run, seconds: float = 2.0) -> float:
    """The fastest of repeated runs within `seconds` (a busy neighbour slows some)."""
    run()
    best, end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
@torch.no_grad()
def main(cfg: DictConfig) -> None:
    tokenizer, model = load_pretrained(cfg.model)
    model.eval()
    rows, width = int(cfg.get("rows", 32)), int(cfg.get("width", 400))
    config = model.config.get_text_config(decoder=True)
    layers, hidden = config.num_hidden_layers, config.hidden_size
    peak, bandwidth = max(matmul_rates().values()), read_rate()
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    torch.manual_seed(0)
    cache = DynamicCache()  # a cache as the prefill leaves it: `width` positions, left padding in every other row
    cache.layers = [ReservedLayer(torch.randn(rows, kv_heads, width + 64, head_dim),
                                  torch.randn(rows, kv_heads, width + 64, head_dim), width) for _ in range(layers)]
    mask = torch.ones(rows, width + 1, dtype=torch.long)
    mask[::2, :width // 4] = 0
    tokens = torch.randint(0, config.vocab_size, (rows, 1))
    blocks = model.model.layers
    linears = [m for block in blocks for m in block.modules() if isinstance(m, torch.nn.Linear)]
    projections = [getattr(block.self_attn, name) for block in blocks
                   for name in ("q_proj", "k_proj", "v_proj", "o_proj")]
    head = model.get_output_embeddings()
    with onednn_linears(model, "decoding"):  # as the engine's steps compute
        def step():  # the same column rewritten: every step over `width` cached positions
            for layer in cache.layers:
                layer.length = width
                layer._expose()
            model(input_ids=tokens, attention_mask=mask, position_ids=torch.full((rows, 1), width), cache=cache,
                  use_cache=True)

        parts = {"whole step": best_seconds(step)}
        x = torch.randn(rows, 1, hidden)
        parts["products of the layers"] = best_seconds(lambda: ([p(x) for p in projections],
                                                                [block.mlp(x) for block in blocks]))
        parts["output layer"] = best_seconds(lambda: head(x))
    query = torch.randn(rows, kv_heads, heads // kv_heads, head_dim)  # one query per head, grouped (as HF's sdpa)
    attends = mask.bool()[:, None, None, :]
    parts["attention"] = best_seconds(lambda: [torch.nn.functional.scaled_dot_product_attention(
        query, layer._keys[:, :, :width + 1], layer._values[:, :, :width + 1], attn_mask=attends)
        for layer in cache.layers])
    keys = cache.layers[0]._keys[:, :, :width + 1]
    body = sum(m.weight.numel() for m in linears)
    flops = {"products of the layers": 2 * rows * body, "output layer": 2 * rows * head.weight.numel(),
             "attention": 4 * layers * heads * head_dim * mask.sum().item()}
    flops["whole step"] = sum(flops.values())
    cache_bytes = 2 * layers * keys.numel() * keys.element_size()
    reads = {"products of the layers": body * 4, "output layer": head.weight.numel() * 4, "attention": cache_bytes}
    reads["whole step"] = sum(reads.values())
    print(f"{cfg.model.name}: a decoding step of {rows} rows over {width} cached positions, "
          f"{torch.get_num_threads()} threads; matmul peak {peak / 1e9:.0f} GFLOP/s, memory reads "
          f"{bandwidth / 1e9:.1f} GB/s\n")
    print("| part | ms | GFLOP | GFLOP/s | compute bound ms | MB read | GB/s | memory bound ms |")
    print("|---|---|---|---|---|---|---|---|")
    for name, seconds in parts.items():
        print(f"| {name} | {seconds * 1e3:.1f} | {flops[name] / 1e9:.2f} | {flops[name] / seconds / 1e9:.0f} | "
              f"{flops[name] / peak * 1e3:.1f} | {reads[name] / 1e6:.0f} | {reads[name] / seconds / 1e9:.1f} | "
              f"{reads[name] / bandwidth * 1e3:.1f} |")
    rest = parts["whole step"] - sum(s for name, s in parts.items() if name != "whole step")
    print(f"| the rest (element-wise, cache writes, Python) | {rest * 1e3:.1f} | | | | | | |")
    print(f"\nthe step: {parts['whole step'] / (flops['whole step'] / peak):.2f}x its compute bound, "
          f"{parts['whole step'] / (reads['whole step'] / bandwidth):.2f}x its memory bound")


if __name__ == "__main__":
    main()
