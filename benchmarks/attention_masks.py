"""Structured attention: FlexAttention BlockMasks against sdpa with the equivalent dense mask.

For the frame-block and DST masks at 4k and 8k tokens (a 16-frame layout), forward + backward
of one attention call, both run side by side in this process. FlexAttention has no backward on
CPU (torch 2.14): there both sides run forward only, and the table says so. Density is the share of allowed
query-key pairs; 1 / density bounds what skipping blocks can gain. Reported: the speed-up of
flex over sdpa, that speed-up as a share of 1 / density (target >= 0.7), and the BlockMask's
bytes as a share of the dense boolean mask's (target < 1%).

    python -m benchmarks.attention_masks [--lengths 4096 8192] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from components.masks.dst import DSTMask
from components.masks.frame_block import FrameBlockMask
from components.masks.rendering import dense_allowed
from components.token_metadata import TokenKind, TokenSequence

FRAMES = 16
TEXT = 64  # text before and after the video


def layout(kind_name: str, length: int) -> TokenSequence:
    """[text | video | text] with 16 frames: frame tokens for frame-block, MASH-VLM's temporal then spatial tokens for DST."""
    video = length - 2 * TEXT
    kind = torch.full((length,), int(TokenKind.TEXT))
    frame = torch.full((length,), -1)
    if kind_name == "frame_block":
        kind[TEXT : TEXT + video] = int(TokenKind.FRAME)
        frame[TEXT : TEXT + video] = torch.arange(video) * FRAMES // video
    else:
        temporal = 3 * FRAMES - 1
        kind[TEXT : TEXT + temporal] = int(TokenKind.TEMPORAL)
        kind[TEXT + temporal : TEXT + video] = int(TokenKind.SPATIAL)
    ones = torch.ones(1, length, dtype=torch.long)
    none = torch.full((1, length), -1)
    return TokenSequence(torch.zeros(1, length, 1), ones, none, none, kind[None], frame[None], none, none, none)


def scheme(kind_name: str):
    return FrameBlockMask() if kind_name == "frame_block" else DSTMask(DSTMask.Config())


def block_mask_bytes(block) -> int:
    tensors = [getattr(block, name, None) for name in ("kv_num_blocks", "kv_indices", "full_kv_num_blocks",
                                                        "full_kv_indices", "q_num_blocks", "q_indices",
                                                        "full_q_num_blocks", "full_q_indices")]
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


def timed(step, repeats: int) -> float:
    step()  # warm-up (and compilation for flex)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure(kind_name: str, length: int, device: str, heads: int = 4, head_dim: int = 64, repeats: int = 3,
            dtype: torch.dtype = torch.float32, compile_flex: bool = True) -> dict:
    """``compile_flex`` False runs flex_attention eagerly (a dry run: the same calls, no minute of compiling)."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    sequence = layout(kind_name, length)
    fn = scheme(kind_name).mask_function(sequence)
    allowed = dense_allowed(fn, 1, length, "cpu").to(device)
    density = float(allowed.float().mean())
    block = create_block_mask(fn, 1, None, length, length, device=device)
    generator = torch.Generator().manual_seed(0)
    backward = device != "cpu"
    q, k, v = (torch.randn(1, heads, length, head_dim, generator=generator).to(device, dtype).requires_grad_(backward)
               for _ in range(3))
    compiled = torch.compile(flex_attention, dynamic=False) if compile_flex else flex_attention
    dense_mask = allowed[:, None]

    def sdpa_step():
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=dense_mask)
        if backward:
            out.sum().backward()

    def flex_step():
        out = compiled(q, k, v, block_mask=block)
        if backward:
            out.sum().backward()

    with torch.no_grad():  # both compute the same attention
        same = torch.allclose(F.scaled_dot_product_attention(q, k, v, attn_mask=dense_mask),
                              compiled(q, k, v, block_mask=block), atol=1e-4 if dtype == torch.float32 else 2e-2)
    sdpa = timed(sdpa_step, repeats)
    flex = timed(flex_step, repeats)
    speedup = sdpa / flex
    return {
        "mask": kind_name, "tokens": length, "density": density, "limit": 1 / density,
        "sdpa_s": sdpa, "flex_s": flex, "speedup": speedup, "share_of_limit": speedup * density,
        "mask_bytes_share": block_mask_bytes(block) / (length * length), "same_output": same,
        "pass": "forward + backward" if backward else "forward (no flex backward on CPU)", "device": device,
    }


def table(rows: list[dict]) -> str:
    lines = ["| mask | tokens | pass | density | 1/density | sdpa (s) | flex (s) | speed-up | speed-up x density (target >= 0.7) | BlockMask / dense bytes (target < 1%) | same output |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['mask']} | {r['tokens']} | {r['pass']} on {r['device']} | {r['density']:.3f} | {r['limit']:.2f} | {r['sdpa_s']:.3f} | "
                     f"{r['flex_s']:.3f} | {r['speedup']:.2f} | {r['share_of_limit']:.2f} | "
                     f"{100 * r['mask_bytes_share']:.3f}% | {r['same_output']} |")
    return "\n".join(lines)


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[4096, 8192])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    rows = [measure(mask, length, args.device) for length in args.lengths for mask in ("frame_block", "dst")]
    result = table(rows)
    print(result)
    return result


if __name__ == "__main__":
    main()
