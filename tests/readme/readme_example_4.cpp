// Compiles the README's fourth C++ example ("TLS": client options), taken from README.md
// at build time by extract_examples.py. It leaves nothing to the reader.
#include "txmq/client.h"

void readme_example_4() {
#include "readme_example_4.inc"
}
