// txmq-fuzz-corpus OUTDIR: writes the seed corpus of the fuzz targets, real frames built
// with the generated code (requests.h), into OUTDIR/frame and OUTDIR/dispatch. The output
// depends on nothing but this program, so every build writes the same files; the
// directories are emptied first.

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "fuzz/requests.h"

namespace {

namespace fs = std::filesystem;
using txmq::fuzz::Bytes;
using txmq::fuzz::NamedFrame;

void write(const fs::path& dir, const std::string& name, const Bytes& bytes) {
  std::ofstream f(dir / name, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (!f) {
    std::fprintf(stderr, "txmq-fuzz-corpus: cannot write %s\n", (dir / name).c_str());
    std::exit(1);
  }
}

fs::path fresh_dir(const fs::path& dir) {
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

// The frame target: a seed byte (chunking mode), then a stream of frames.
void frame_corpus(const fs::path& dir, const std::vector<NamedFrame>& requests, const std::vector<NamedFrame>& answers) {
  std::uint8_t seed = 0;
  for (const auto* set : {&requests, &answers})
    for (const auto& f : *set) {
      Bytes b{seed};
      seed = static_cast<std::uint8_t>((seed + 1) % 4);  // every chunking mode in turn
      b.insert(b.end(), f.frame.begin(), f.frame.end());
      write(dir, f.name, b);
    }
  // Many frames in one stream, in each chunking mode and once long enough to compact.
  for (std::uint8_t s : {0x00, 0x01, 0x02, 0x03, 0xff}) {
    Bytes b{s};
    for (const auto& f : requests) b.insert(b.end(), f.frame.begin(), f.frame.end());
    char name[32];
    std::snprintf(name, sizeof(name), "all-requests-%02x", s);
    write(dir, name, b);
  }
}

// The dispatch target: a flags byte, then chunks of a 2-byte length and a frame without
// its 4-byte prefix (the harness puts one back).
void append_chunk(Bytes& b, const Bytes& frame) {
  const std::size_t len = frame.size() - 4;
  b.push_back(static_cast<std::uint8_t>(len));
  b.push_back(static_cast<std::uint8_t>(len >> 8));
  b.insert(b.end(), frame.begin() + 4, frame.end());
}

void dispatch_corpus(const fs::path& dir, const std::vector<NamedFrame>& requests) {
  for (const auto& f : requests) {
    Bytes b{0};
    append_chunk(b, f.frame);
    write(dir, f.name, b);
  }
  // The whole story on one session: create, produce, subscribe, settle, configure,
  // transactions, redrive, delete.
  Bytes all{0};
  for (const auto& f : requests) append_chunk(all, f.frame);
  write(dir, "scenario", all);
  // A fresh connection: Hello first, then work; and one that skips the Hello.
  Bytes handshake{1};
  for (const auto& f : requests) append_chunk(handshake, f.frame);
  write(dir, "fresh-connection", handshake);
  Bytes no_hello{1};
  append_chunk(no_hello, requests.at(1).frame);
  write(dir, "fresh-connection-no-hello", no_hello);
  // Unframed: the same frames as bytes on the wire, cut short at the end.
  Bytes raw{2};
  for (const auto& f : requests) raw.insert(raw.end(), f.frame.begin(), f.frame.end());
  raw.resize(raw.size() - 3);
  write(dir, "raw-stream-cut-short", raw);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: txmq-fuzz-corpus OUTDIR\n");
    return 2;
  }
  const fs::path out = argv[1];
  auto requests = txmq::fuzz::request_frames();
  auto answers = txmq::fuzz::answer_frames();
  frame_corpus(fresh_dir(out / "frame"), requests, answers);
  dispatch_corpus(fresh_dir(out / "dispatch"), requests);
  return 0;
}
