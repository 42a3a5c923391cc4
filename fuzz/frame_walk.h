#pragma once
// Reads every field of a verified frame the way a handler or a client would: strings and
// byte vectors element by element, nested tables, vectors of tables and of structs (each
// struct by member access and by copy). Under ASan and UBSan this turns a frame that the
// verifier accepted but a reader cannot safely read (a field out of bounds, a misaligned
// struct) into a report, instead of waiting for a handler that happens to read it.
//
// Keep in step with schema/txmq.fbs: the switch over wire::Body lists every member
// without a default, so -Wswitch (an error in fuzz/) names a body added to the union and
// not walked here.

#include <cstdint>

#include "txmq_generated.h"

namespace txmq::fuzz {

// Returns a digest of everything read, so that the compiler cannot drop the reads.
// `frame` must come from common::verify_frame().
std::uint64_t walk_frame(const wire::Frame& frame);

}  // namespace txmq::fuzz
