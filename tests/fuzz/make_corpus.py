#!/usr/bin/python3
"""make_corpus.py — writes the fuzzers' seed corpora, tests/fuzz/corpus/<reader>/: a few small valid
files of each format made by the reference tools (numpy, safetensors, zipfile, gzip, TensorBoard's
writer, PIL), plus handcrafted damaged ones (truncated, bad magic, bad CRC, lengths past the end,
shapes that do not match the data). Deterministic: running it again rewrites the same bytes.
Run with /usr/bin/python3 (it has numpy, safetensors, PIL, tensorboard):
    /usr/bin/python3 tests/fuzz/make_corpus.py
"""
import gzip
import io
import os
import struct
import zipfile

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def put(reader, name, data):
    d = os.path.join(ROOT, reader)
    os.makedirs(d, exist_ok=True)
    assert len(data) <= 4096, (reader, name, len(data))
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def gz(data):  # mtime 0: reproducible bytes
    b = io.BytesIO()
    with gzip.GzipFile(fileobj=b, mode="wb", mtime=0) as g:
        g.write(data)
    return b.getvalue()


# ---- safetensors ---------------------------------------------------------------------------------
def safetensors():
    from safetensors.numpy import save

    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    put("safetensors", "f32_2x3", save({"w": a}))
    put("safetensors", "mixed_meta", save({
        "a": np.array([1, -2, 3], dtype=np.int64), "b": np.array([True, False]),
        "c": np.arange(4, dtype=np.float16).reshape(2, 2), "d": np.array([7], dtype=np.uint8),
        "e": np.array([-1, 2], dtype=np.int8), "f": np.array([1, 65535], dtype=np.uint16),
    }, metadata={"format": "pt", "note": "fuzz seed"}))
    put("safetensors", "ints", save({
        "i16": np.array([-3, 4], dtype=np.int16), "i32": np.array([[1], [2]], dtype=np.int32),
        "u32": np.array([4000000000], dtype=np.uint32), "u64": np.array([5], dtype=np.uint64),
        "f64": np.array(3.5, dtype=np.float64),
    }))
    put("safetensors", "empty_tensor", save({"z": np.zeros((0, 3), dtype=np.float32)}))
    # bf16 written by hand (numpy has no bfloat16)
    hdr = b'{"x":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]}}'
    put("safetensors", "bf16", struct.pack("<Q", len(hdr)) + hdr + b"\x80\x3f\x00\x40")
    # damaged
    good = save({"w": a})
    put("safetensors", "bad_truncated", good[:-5])
    put("safetensors", "bad_header_len", struct.pack("<Q", 1 << 40) + good[8:])
    hdr = b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},' \
          b'"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}'
    put("safetensors", "bad_overlap", struct.pack("<Q", len(hdr)) + hdr + bytes(12))
    hdr = b'{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}'
    put("safetensors", "bad_shape", struct.pack("<Q", len(hdr)) + hdr + bytes(8))
    hdr = b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"__metadata__":{"k":"\\ud800"}}'
    put("safetensors", "bad_json", struct.pack("<Q", len(hdr)) + hdr + bytes(8))


# ---- npy ----------------------------------------------------------------------------------------
def npy_bytes(a, version=None):
    b = io.BytesIO()
    if version is None:
        np.save(b, a)
    else:
        np.lib.format.write_array(b, a, version=version)
    return b.getvalue()


def npy():
    put("npy", "f32_2x3", npy_bytes(np.arange(6, dtype=np.float32).reshape(2, 3)))
    put("npy", "f64_scalar", npy_bytes(np.array(2.5)))
    put("npy", "i8_big", npy_bytes(np.array([1, -2, 300], dtype=">i8")))
    put("npy", "u2_fortran", npy_bytes(np.asfortranarray(np.arange(6, dtype=np.uint16).reshape(2, 3))))
    put("npy", "bool_v2", npy_bytes(np.array([True, False, True]), version=(2, 0)))
    put("npy", "f2_v3", npy_bytes(np.array([0.5, -1], dtype=np.float16), version=(3, 0)))
    put("npy", "u1_empty", npy_bytes(np.zeros((2, 0), dtype=np.uint8)))
    put("npy", "u8_4d", npy_bytes(np.arange(16, dtype=np.uint64).reshape(2, 2, 2, 2)))
    good = npy_bytes(np.arange(6, dtype=np.float32))
    put("npy", "bad_truncated", good[:-3])
    put("npy", "bad_magic", b"\x93NUMPX" + good[6:])
    put("npy", "bad_object", good.replace(b"'<f4'", b"'|O8'"))
    put("npy", "bad_header_len", good[:8] + b"\xff\xff" + good[10:])
    put("npy", "bad_trailing", good + b"\0\0\0\0")


# ---- npz ----------------------------------------------------------------------------------------
def zip_bytes(members, compress, zip64=False):
    b = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(b, "w", method) as z:
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = method
            with z.open(info, "w", force_zip64=zip64) as f:
                f.write(data)
    return b.getvalue()


def npz():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.array([1, 2, 3], dtype=np.int64)
    members = [("a.npy", npy_bytes(a)), ("b.npy", npy_bytes(b))]
    put("npz", "stored", zip_bytes(members, False))
    put("npz", "deflated", zip_bytes(members, True))
    put("npz", "zip64_stored", zip_bytes(members[:1], False, zip64=True))
    put("npz", "zip64_deflated", zip_bytes(members[1:], True, zip64=True))
    put("npz", "folder_and_bool", zip_bytes([("d/", b""), ("m.npy", npy_bytes(np.array([True])))],
                                            False))
    buf = io.BytesIO()  # np.savez's own bytes too
    np.savez(buf, x=np.array([0.25], dtype=np.float16))
    put("npz", "np_savez", buf.getvalue())
    good = zip_bytes(members, False)
    put("npz", "bad_truncated", good[: len(good) // 2])
    bad = bytearray(good)
    bad[60] ^= 0xFF  # inside the first member's data: its CRC no longer matches
    put("npz", "bad_crc", bytes(bad))
    bad = bytearray(good)
    bad[-6:-2] = struct.pack("<I", 0xFFFFFF00)  # the directory's offset past the end
    put("npz", "bad_cd_offset", bytes(bad))
    d = zip_bytes(members[:1], True)
    bad = bytearray(d)
    bad[40:44] = b"\xff\xff\xff\xff"  # corrupt deflate data
    put("npz", "bad_deflate", bytes(bad))


# ---- idx ----------------------------------------------------------------------------------------
def idx_bytes(code, shape, data):
    return bytes([0, 0, code, len(shape)]) + b"".join(struct.pack(">I", s) for s in shape) + data


def idx():
    u8 = idx_bytes(0x08, [2, 3, 3], bytes(range(18)))
    put("idx", "u8_2x3x3", u8)
    put("idx", "u8_2x3x3.gz", gz(u8))
    put("idx", "i8", idx_bytes(0x09, [4], b"\x01\xff\x80\x7f"))
    put("idx", "i16", idx_bytes(0x0B, [2, 2], np.array([1, -1, 300, -300], ">i2").tobytes()))
    put("idx", "i32.gz", gz(idx_bytes(0x0C, [3], np.array([1, -7, 1 << 30], ">i4").tobytes())))
    put("idx", "f32", idx_bytes(0x0D, [2, 1], np.array([0.5, -2], ">f4").tobytes()))
    put("idx", "f64_0d", idx_bytes(0x0E, [], np.array([3.25], ">f8").tobytes()))
    put("idx", "empty_dim", idx_bytes(0x08, [0, 5], b""))
    put("idx", "bad_trailing", u8 + b"xx")
    put("idx", "bad_truncated", u8[:-4])
    put("idx", "bad_type", bytes([0, 0, 0x0A, 1, 0, 0, 0, 1, 0]))
    put("idx", "bad_dims", bytes([0, 0, 0x08, 9]) + bytes(36))
    put("idx", "bad_huge", idx_bytes(0x0E, [0xFFFFFFFF, 0xFFFFFFFF], b""))
    put("idx", "bad_gz_cut.gz", gz(u8)[:-6])
    g = bytearray(gz(u8))
    g[-8] ^= 1  # the gzip trailer's CRC
    put("idx", "bad_gz_crc.gz", bytes(g))


# ---- TensorBoard event files ----------------------------------------------------------------------
def crc32c(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def masked(data):
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def record(data):
    head = struct.pack("<Q", len(data))
    return head + struct.pack("<I", masked(head)) + data + struct.pack("<I", masked(data))


def events():
    from tensorboard.compat.proto import event_pb2, summary_pb2

    ev = [event_pb2.Event(wall_time=1.5, file_version="brain.Event:2")]
    s = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag="loss", simple_value=0.25)])
    ev.append(event_pb2.Event(wall_time=2.0, step=7, summary=s))
    h = summary_pb2.HistogramProto(min=-1, max=2, num=3, sum=1, sum_squares=5,
                                   bucket_limit=[-1, 0, 2], bucket=[1, 1, 1])
    ev.append(event_pb2.Event(wall_time=3.0, step=8, summary=summary_pb2.Summary(
        value=[summary_pb2.Summary.Value(tag="w", histo=h)])))
    recs = [record(e.SerializeToString()) for e in ev]
    put("events", "three_events", b"".join(recs))
    put("events", "one_event", recs[0])
    put("events", "empty_record", record(b""))
    put("events", "bad_truncated", b"".join(recs)[:-3])
    bad = bytearray(recs[0])
    bad[8] ^= 1  # the length's CRC
    put("events", "bad_len_crc", bytes(bad))
    bad = bytearray(recs[0])
    bad[14] ^= 1  # the data
    put("events", "bad_data_crc", bytes(bad))
    head = struct.pack("<Q", 1 << 62)
    put("events", "bad_len_past_end", head + struct.pack("<I", masked(head)) + b"abcd")


# ---- images ---------------------------------------------------------------------------------------
def images():
    from PIL import Image

    rgb = Image.frombytes("RGB", (5, 4), bytes((i * 37) % 256 for i in range(60)))

    def enc(img, fmt, **kw):
        b = io.BytesIO()
        img.save(b, fmt, **kw)
        return b.getvalue()

    put("image", "rgb.png", enc(rgb, "PNG"))
    put("image", "rgba.png", enc(rgb.convert("RGBA"), "PNG"))
    put("image", "gray.png", enc(rgb.convert("L"), "PNG"))
    put("image", "palette.png", enc(rgb.convert("P"), "PNG"))
    put("image", "gray16.png", enc(Image.frombytes("I;16", (5, 4), bytes(range(40))), "PNG"))
    put("image", "gray_alpha.png", enc(rgb.convert("LA"), "PNG"))
    put("image", "rgb.jpg", enc(rgb, "JPEG", quality=80))
    put("image", "progressive.jpg", enc(rgb, "JPEG", quality=60, progressive=True))
    put("image", "gray.jpg", enc(rgb.convert("L"), "JPEG"))
    put("image", "subsampled.jpg", enc(rgb.resize((17, 9)), "JPEG", subsampling=2))
    put("image", "rgb.bmp", enc(rgb, "BMP"))
    put("image", "rgb.gif", enc(rgb, "GIF"))
    put("image", "rgb.tga", enc(rgb, "TGA"))
    put("image", "rle.tga", enc(rgb, "TGA", compression="tga_rle"))
    png = enc(rgb, "PNG")
    put("image", "bad_truncated.png", png[: len(png) - 20])
    bad = bytearray(png)
    bad[16:20] = struct.pack(">I", 1 << 24)  # width 16M in the IHDR
    put("image", "bad_width.png", bytes(bad))
    jpg = enc(rgb, "JPEG")
    put("image", "bad_truncated.jpg", jpg[: len(jpg) // 2])
    put("image", "bad_magic", b"\x89PNX" + png[4:])


if __name__ == "__main__":
    safetensors()
    npy()
    npz()
    idx()
    events()
    images()
    for r in sorted(os.listdir(ROOT)):
        files = os.listdir(os.path.join(ROOT, r))
        print(f"{r}: {len(files)} files, {sum(os.path.getsize(os.path.join(ROOT, r, f)) for f in files)} bytes")
