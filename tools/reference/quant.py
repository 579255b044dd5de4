#!/usr/bin/env python3
"""Reference fixtures for vidlora::quant (NF4 / FP4 blockwise quantization, double quantization).

Run: /opt/refenv/bin/python tools/reference/quant.py   (writes tests/fixtures/quant/*.json)

Every number comes from bitsandbytes on the CPU:
  * 4-bit packing and absmax: bitsandbytes.functional.quantize_4bit (bitsandbytes' torch backend).
  * the 8-bit blockwise step of double quantization: torch.ops.bitsandbytes.quantize_blockwise
    fed a float64 copy of the centred absmax, which runs bitsandbytes' exact nearest-code path
    (argmin over the signed dynamic map, ties to the lower code). bitsandbytes' native AVX2 fp32
    kernel instead rounds through a 65536-entry lookup table and lands on the other neighbour for
    values within ~1e-5 of a midpoint; how often that happens here is recorded as
    `native_lut_code_mismatches`.
  * dequantized values: bitsandbytes.functional.dequantize_4bit on the same quant state.

Large inputs are not stored: they come from `hashed_input` below, which the C++ test recomputes
(integer hash -> multiples of 2^-16 -> float32 products, all exact or correctly rounded).
"""
import json
import os
import sys

import torch
import bitsandbytes
import bitsandbytes.functional as F
from bitsandbytes.functional import QuantState

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "quant")
MASK = (1 << 64) - 1


def mix64(z):
    """splitmix64 finaliser."""
    z = (z + 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def hashed_input(n, seed, blocksize):
    """Roughly normal values (sum of three uniforms) scaled per block so absmax varies."""
    vals, scales = [], []
    for i in range(n):
        h = mix64(seed * 0x100000001B3 + i)
        u = [((h >> s) & 0xFFFF) for s in (0, 16, 32)]
        vals.append((u[0] + u[1] + u[2] - 98304) / 32768.0)  # exact in float32
        block = i // blocksize
        scales.append(0.0078125 * (1 + (mix64(seed + 7919 * block) % 61)))  # k / 128, exact
    return torch.tensor(vals, dtype=torch.float32) * torch.tensor(scales, dtype=torch.float32)


def bits(t):
    return [int(v) for v in t.contiguous().view(torch.int32).tolist()]


def quantize_case(name, x, quant_type, blocksize, double_quant, store_input):
    packed, state = F.quantize_4bit(x, blocksize=blocksize, quant_type=quant_type, compress_statistics=False)
    absmax = state.absmax.clone()
    case = {
        "name": name, "format": quant_type, "blocksize": blocksize, "numel": x.numel(),
        "double_quant": double_quant,
        "packed": [int(v) for v in packed.reshape(-1).tolist()],
        "absmax_bits": bits(absmax),
    }
    if store_input:
        case["input_bits"] = bits(x)
    if double_quant:
        offset = absmax.mean()
        centred = absmax - offset
        # exact nearest-code path (float64 input takes bitsandbytes' argmin fallback)
        code = F.create_dynamic_map().float()
        q_exact, nested = torch.ops.bitsandbytes.quantize_blockwise(centred.double(), code, 256)
        q_native, nested_native = torch.ops.bitsandbytes.quantize_blockwise(centred, code.clone(), 256)
        assert torch.equal(nested, nested_native)
        state2 = QuantState(absmax=nested.float(), code=code, blocksize=256, dtype=torch.float32)
        dq_state = QuantState(absmax=q_exact, shape=x.shape, dtype=torch.float32, blocksize=blocksize,
                              code=F.get_4bit_type(quant_type, device="cpu"), quant_type=quant_type,
                              offset=offset, state2=state2)
        deq = F.dequantize_4bit(packed, dq_state)
        absmax_dq = F.dequantize_blockwise(q_exact, state2) + offset
        case.update({
            "absmax_offset_bits": bits(offset.reshape(1))[0],
            "absmax_offset_double_mean_bits": bits(torch.tensor([absmax.double().mean().item()], dtype=torch.float32))[0],
            "qabsmax": [int(v) for v in q_exact.tolist()],
            "nested_absmax_bits": bits(nested.float()),
            "native_lut_code_mismatches": int((q_exact != q_native).sum().item()),
            "dequantized_absmax_bits": bits(absmax_dq),
        })
        # the library's own double-quantized round trip, for the record
        _, st_bnb = F.quantize_4bit(x, blocksize=blocksize, quant_type=quant_type, compress_statistics=True)
        assert torch.equal(st_bnb.offset, offset)
    else:
        deq = F.dequantize_4bit(packed, state)
    case["dequantized_bits"] = bits(deq.reshape(-1))
    return case


def tie_input(quant_type):
    """Two blocks of 64, each holding 1.0 (so the scale is exactly 1), then every code, every
    midpoint, values one ulp either side of each midpoint, and signed zeros / tiny values."""
    code = F.get_4bit_type(quant_type, device="cpu").float()
    s = torch.sort(code).values
    mids = (s[:-1] + s[1:]) / 2
    up = torch.nextafter(mids, torch.full_like(mids, 2.0))
    down = torch.nextafter(mids, torch.full_like(mids, -2.0))
    rest = torch.cat([s, mids, up, down, torch.tensor([0.0, -0.0, 1e-30, -1e-30, 0.002, -0.002])])
    rest = torch.cat([rest, torch.zeros(126 - rest.numel())])
    one = torch.tensor([1.0])
    return torch.cat([one, rest[:63], one, rest[63:]])


def main():
    torch.manual_seed(0)
    meta = {"torch": torch.__version__, "bitsandbytes": bitsandbytes.__version__,
            "python": sys.version.split()[0], "generator": "tools/reference/quant.py"}

    # --- codes and maps ---
    maps = dict(meta)
    for qt in ("nf4", "fp4"):
        code = F.get_4bit_type(qt, device="cpu").float()
        order = torch.argsort(code)
        s = code[order]
        maps[qt] = {"code_bits": bits(code), "sorted_order": order.tolist(), "midpoint_bits": bits((s[:-1] + s[1:]) / 2)}
    maps["dynamic_signed_bits"] = bits(F.create_dynamic_map(signed=True).float())
    with open(os.path.join(OUT, "codes.json"), "w") as f:
        json.dump(maps, f)

    # --- small cases with stored inputs ---
    small = dict(meta)
    cases = []
    for qt in ("nf4", "fp4"):
        x = tie_input(qt)
        cases.append(quantize_case(f"{qt} ties and exact codes", x, qt, 64, False, True))
        cases.append(quantize_case(f"{qt} odd numel with partial block", torch.randn(333), qt, 32, False, True))
        z = torch.randn(160)
        z[64:128] = 0.0  # an all-zero block: absmax 0
        cases.append(quantize_case(f"{qt} zero block", z, qt, 64, False, True))
    small["cases"] = cases
    with open(os.path.join(OUT, "blocks_small.json"), "w") as f:
        json.dump(small, f)

    # --- hashed inputs (recomputed in C++) ---
    hashed = dict(meta)
    cases = []
    for qt, bs, n, seed, dq in (("nf4", 64, 4096, 1, False), ("fp4", 64, 4096, 2, False),
                                ("nf4", 128, 3001, 3, False), ("nf4", 4096, 9000, 4, False),
                                ("nf4", 64, 64 * 300 + 17, 5, True), ("fp4", 32, 32 * 600 + 5, 6, True),
                                ("nf4", 256, 256 * 70, 7, True)):
        c = quantize_case(f"{qt} hashed seed {seed}", hashed_input(n, seed, bs), qt, bs, dq, False)
        c["seed"] = seed
        deq = c.pop("dequantized_bits")  # keep the file small: every 97th value
        c["dequantized_sample_stride"] = 97
        c["dequantized_sample_bits"] = deq[::97]
        x = hashed_input(n, seed, bs)
        c["input_checksum_bits"] = bits(x.double().sum().float().reshape(1))[0]
        cases.append(c)
    hashed["cases"] = cases
    with open(os.path.join(OUT, "blocks_hashed.json"), "w") as f:
        json.dump(hashed, f)

    for fn in ("codes.json", "blocks_small.json", "blocks_hashed.json"):
        print(fn, os.path.getsize(os.path.join(OUT, fn)))


if __name__ == "__main__":
    main()
