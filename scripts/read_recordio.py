#!/usr/bin/env python3
"""Reads an insightface RecordIO dataset (train.rec + train.idx) with the standard library and numpy
only, and prints 'key label jpeg_bytes sha256' per image record. Usage: read_recordio.py DIR"""
import hashlib, struct, sys
import numpy as np

d = sys.argv[1]
offsets = dict(tuple(map(int, line.split("\t"))) for line in open(f"{d}/train.idx") if line.strip())
rec = open(f"{d}/train.rec", "rb").read()
def record(key):
    magic, lrec = struct.unpack_from("<II", rec, offsets[key])
    assert magic == 0xCED7230A, f"record {key}: bad magic {magic:#x}"
    s = rec[offsets[key] + 8: offsets[key] + 8 + (lrec & (1 << 29) - 1)]
    flag, label, id1, id2 = struct.unpack_from("<IfQQ", s)
    labels = np.frombuffer(s, np.float32, flag, 24) if flag > 0 else label
    return labels, s[24 + 4 * flag:]
(first, end), _ = record(0)  # header record: image records are 1 .. first-1
for key in range(1, int(first)):
    label, jpeg = record(key)
    print(key, int(label), len(jpeg), hashlib.sha256(jpeg).hexdigest())
