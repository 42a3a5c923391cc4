#!/usr/bin/env python3
"""Writes the hand-made regression inputs for the misaligned-vector findings.

FlatBuffers' verifier (2.0.8) checks that a vector's length is 4-byte aligned but not that
its elements are aligned for their type, so a vector of 8-byte elements (ulong, or the
structs MessageRef, TxnEnd, TxnResult) may start at 4 mod 8 and still verify; reading an
element is then a misaligned load (UBSan: "misaligned address"). Each frame below is laid
out by hand with its vector data at 4 mod 8 from the frame's start (the decoder aligns
the frame's start to 8). Run from anywhere: python3 fuzz/regressions/misaligned.py
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
# wire::Body values (schema/txmq.fbs union order, NONE = 0).
ACK, REDRIVE, END_TRANSACTIONS, CREATE_TOPIC, SUBSCRIBE = 15, 25, 29, 7, 13


def frame(body_type, body_vtable, body_table_and_data, request_id=7):
    """Frame table at 20, the body's vtable at 40, its table from 48 + len(vtable) pad."""
    b = bytearray()
    b += struct.pack("<I", 0)                  # 0: size, patched below
    b += struct.pack("<I", 16)                 # 4: root -> Frame table at 20
    b += struct.pack("<5H", 10, 17, 4, 16, 12)  # 8: Frame vtable: request_id, body_type, body
    b += b"\0\0"                               # 18: pad
    b += struct.pack("<i", 12)                 # 20: soffset -> vtable at 8
    b += struct.pack("<Q", request_id)         # 24: request_id
    body_at = 40 + len(body_vtable)
    body_at += (-body_at) % 4
    b += struct.pack("<I", body_at - 32)       # 32: body -> body table
    b += struct.pack("<B", body_type) + b"\0\0\0"  # 36: body_type
    b += body_vtable                           # 40: body vtable
    b += b"\0" * (body_at - len(b))
    b += body_table_and_data(body_at)
    struct.pack_into("<I", b, 0, len(b) - 4)
    return bytes(b)


def string(s):
    data = s.encode() + b"\0"
    return struct.pack("<I", len(s)) + data


def ack(at):
    # Ack { topic, group, messages: [MessageRef] } at 48: soffset, 3 uoffsets, then data.
    t = bytearray(struct.pack("<i", at - 40))
    t += b"\0" * 12                                   # at+4, +8, +12: the three uoffsets
    topic_at = at + len(t); t += string("fuzz-t"); t += b"\0" * ((-len(t)) % 4)
    group_at = at + len(t); t += string("fuzz-g"); t += b"\0" * ((-len(t)) % 4)
    if (at + len(t) + 4) % 8 == 0: t += b"\0" * 4     # elements at 4 mod 8
    vec_at = at + len(t); t += struct.pack("<I", 1) + struct.pack("<I4xQ", 0, 0)
    struct.pack_into("<3I", t, 4, topic_at - (at + 4), group_at - (at + 8), vec_at - (at + 12))
    return bytes(t)


def end_transactions(at):
    # EndTransactions { items: [TxnEnd] }: soffset, uoffset, then the vector.
    t = bytearray(struct.pack("<i", at - 40)) + b"\0" * 4
    if (at + len(t) + 4) % 8 == 0: t += b"\0" * 4
    vec_at = at + len(t); t += struct.pack("<I", 1) + struct.pack("<QB7x", 1, 0)
    struct.pack_into("<I", t, 4, vec_at - (at + 4))
    return bytes(t)


def redrive(at):
    # Redrive { group, offsets: [ulong] }.
    t = bytearray(struct.pack("<i", at - 40)) + b"\0" * 8
    group_at = at + len(t); t += string("fuzz-g"); t += b"\0" * ((-len(t)) % 4)
    if (at + len(t) + 4) % 8 == 0: t += b"\0" * 4
    vec_at = at + len(t); t += struct.pack("<I", 1) + struct.pack("<Q", 0)
    struct.pack_into("<2I", t, 4, group_at - (at + 4), vec_at - (at + 8))
    return bytes(t)


def strings_table(*names):
    # A table of only string fields: soffset, one uoffset per field, then the strings.
    def build(at):
        t = bytearray(struct.pack("<i", at - 40)) + b"\0" * (4 * len(names))
        for i, name in enumerate(names):
            struct.pack_into("<I", t, 4 + 4 * i, at + len(t) - (at + 4 + 4 * i))
            t += string(name)
            t += b"\0" * ((-len(t)) % 4)
        return bytes(t)
    return build


def strings_vtable(n):
    return struct.pack("<%dH" % (2 + n), 4 + 2 * n, 4 + 4 * n, *[4 + 4 * i for i in range(n)])


CREATE_FRAME = frame(CREATE_TOPIC, strings_vtable(1), strings_table("fuzz-t"), request_id=5)
SUBSCRIBE_FRAME = frame(SUBSCRIBE, strings_vtable(2), strings_table("fuzz-t", "fuzz-g"), request_id=6)
ACK_FRAME = frame(ACK, struct.pack("<5H", 10, 16, 4, 8, 12), ack)
END_FRAME = frame(END_TRANSACTIONS, struct.pack("<3H", 6, 8, 4), end_transactions)
REDRIVE_FRAME = frame(REDRIVE, struct.pack("<4H", 8, 12, 4, 8), redrive)


def chunk(frame_bytes):
    """The dispatch target's chunk: 2-byte length, the frame without its 4-byte prefix."""
    body = frame_bytes[4:]
    return struct.pack("<H", len(body)) + body


def write(path, data):
    with open(os.path.join(HERE, path), "wb") as f:
        f.write(data)


# The frame target: seed byte 0 (small chunks), then the frame.
write("frame/ack-misaligned-messageref", b"\0" + ACK_FRAME)
write("frame/end-transactions-misaligned-txnend", b"\0" + END_FRAME)
write("frame/redrive-misaligned-ulong", b"\0" + REDRIVE_FRAME)
# The dispatch target: flags 0 (the session), then chunks. Ack reads its messages only
# for a group somebody subscribed, so create the topic and subscribe first.
# The subscription is registered once its group's record is written, so the Ack goes in a
# second input, replayed after the first in the same process (the sentinel of the first
# waits for that write).
write("dispatch/ack-misaligned-messageref.1", b"\0" + chunk(CREATE_FRAME) + chunk(SUBSCRIBE_FRAME))
write("dispatch/ack-misaligned-messageref.2", b"\0" + chunk(ACK_FRAME))
write("dispatch/end-transactions-misaligned-txnend", b"\0" + chunk(END_FRAME))
