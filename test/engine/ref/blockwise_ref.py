"""numpy reference for site-agent/engine/quant/blockwise.ts, written from the documented layout only
(MatMulNBits / GatherBlockQuantized uint8 data, symmetric, implied zero point 2^(bits-1)):
  4 bits: scale = m / -8 for the block's largest-magnitude value m, q = clip(round(x/scale), -8, 7) + 8,
          two values per byte, the first in the low nibble;
  8 bits: scale = max|x| / 127, q = clip(round(x/scale), -127, 127) + 128.
Rows are padded with zeros to whole blocks. Reads JSON {w, rows, cols, bits, block} on stdin and prints
JSON {data, scales, dequant}: the bytes and scales it computes and their dequantization."""
import json, sys
import numpy as np

req = json.load(sys.stdin)
rows, cols, bits, block = req["rows"], req["cols"], req["bits"], req["block"]
w = np.asarray(req["w"], dtype=np.float32).reshape(rows, cols)
nb = -(-cols // block)
padded = np.zeros((rows, nb * block), dtype=np.float32)
padded[:, :cols] = w
blocks = padded.reshape(rows, nb, block)
if bits == 4:
    idx = np.abs(blocks).argmax(axis=-1)
    m = np.take_along_axis(blocks, idx[..., None], axis=-1)[..., 0]
    scales = (m / np.float32(-8)).astype(np.float32)
    q = np.clip(np.floor(blocks * np.where(scales == 0, 0, 1 / np.where(scales == 0, 1, scales.astype(np.float64)))[..., None] + 0.5), -8, 7).astype(np.int32) + 8
    q = q.reshape(rows, nb * block)
    data = (q[:, 0::2] | (q[:, 1::2] << 4)).astype(np.uint8)
    lo, hi = (data & 15).astype(np.int32) - 8, (data >> 4).astype(np.int32) - 8
    vals = np.empty((rows, nb * block), dtype=np.int32)
    vals[:, 0::2], vals[:, 1::2] = lo, hi
else:
    scales = (np.abs(blocks).max(axis=-1) / np.float32(127)).astype(np.float32)
    q = np.clip(np.floor(blocks * np.where(scales == 0, 0, 1 / np.where(scales == 0, 1, scales.astype(np.float64)))[..., None] + 0.5), -127, 127).astype(np.int32) + 128
    data = q.reshape(rows, nb * block).astype(np.uint8)
    vals = data.astype(np.int32) - 128
deq = (vals.reshape(rows, nb, block).astype(np.float32) * scales[..., None]).reshape(rows, nb * block)[:, :cols]
print(json.dumps({"data": data.reshape(-1).tolist(), "scales": scales.reshape(-1).tolist(), "dequant": deq.reshape(-1).tolist()}))
