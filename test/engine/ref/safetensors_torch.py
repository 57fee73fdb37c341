"""The safetensors format read and written with plain json + struct + numpy/torch, for the
python references and cross-checks (the safetensors package is not installed here; the format is
simple, and reading it by hand keeps these checks independent of our TypeScript reader)."""
import json
import struct

import numpy as np
import torch

_TORCH_DTYPE = {torch.float32: 'F32', torch.float16: 'F16', torch.bfloat16: 'BF16'}


def read_safetensors_meta(path):
    """(metadata or None, {name: float32 tensor}) of a safetensors file (F32, F16 or BF16)."""
    with open(path, 'rb') as f:
        n = struct.unpack('<Q', f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, e in header.items():
        if name == '__metadata__':
            continue
        a, b = e['data_offsets']
        raw = data[a:b]
        if e['dtype'] == 'F32':
            arr = np.frombuffer(raw, dtype='<f4')
        elif e['dtype'] == 'F16':
            arr = np.frombuffer(raw, dtype='<f2').astype(np.float32)
        elif e['dtype'] == 'BF16':
            arr = (np.frombuffer(raw, dtype='<u2').astype(np.uint32) << 16).view(np.float32)
        else:
            raise ValueError(f'{path}: tensor {name} has dtype {e["dtype"]}')
        out[name] = torch.from_numpy(arr.copy()).reshape(e['shape'])
    return header.get('__metadata__'), out


def read_safetensors(path):
    """{name: float32 tensor} of a safetensors file."""
    return read_safetensors_meta(path)[1]


def write_safetensors(path, tensors, metadata=None):
    """Tensors in name order, each in its own dtype (float32, float16 or bfloat16)."""
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous()
        raw = (t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy().tobytes()
        header[name] = {'dtype': _TORCH_DTYPE[t.dtype], 'shape': list(t.shape), 'data_offsets': [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    if metadata is not None:
        header['__metadata__'] = metadata
    h = json.dumps(header, separators=(',', ':')).encode()
    h += b' ' * ((8 - len(h) % 8) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(h)) + h + b''.join(blobs))
