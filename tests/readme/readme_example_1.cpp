// Compiles the README's first C++ example ("The C++ client"), taken from README.md at
// build time by extract_examples.py. Only what the example leaves to the reader is
// defined here; the example's own #include is a no-op after the one below.
#include <iostream>
#include <string>

#include "txmq/client.h"

namespace {
void handle(const std::string&) {}
}  // namespace

void readme_example_1() {
#include "readme_example_1.inc"
}
