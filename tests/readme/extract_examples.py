#!/usr/bin/env python3
"""Writes each ```cpp block of README.md to OUT_DIR/readme_example_<n>.inc (n from 1, in
the README's order), for the readme_example_<n>.cpp wrappers to compile.

Fails when the README holds another number of blocks than expected, so that a new example
cannot go uncompiled: give it a wrapper and raise the count in tests/readme/CMakeLists.txt.
Each .inc starts with a #line directive, so compile errors point at the README's lines.

Usage: extract_examples.py README OUT_DIR EXPECTED
"""
import pathlib
import re
import sys


def main() -> int:
    readme, out_dir, expected = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), int(sys.argv[3])
    lines = readme.read_text(encoding="utf-8").splitlines()
    blocks = []  # (first line number, text)
    start = None
    for number, line in enumerate(lines, start=1):
        if start is None and re.fullmatch(r"```cpp\s*", line):
            start = number + 1
        elif start is not None and re.fullmatch(r"```\s*", line):
            blocks.append((start, "\n".join(lines[start - 1 : number - 1]) + "\n"))
            start = None
    if start is not None:
        print(f"{readme}:{start - 1}: a ```cpp block is not closed", file=sys.stderr)
        return 1
    if len(blocks) != expected:
        print(f"{readme} has {len(blocks)} C++ examples, tests/readme expects {expected}: "
              "add a wrapper for the new one and update the count", file=sys.stderr)
        return 1
    out_dir.mkdir(parents=True, exist_ok=True)
    for n, (first, text) in enumerate(blocks, start=1):
        out = out_dir / f"readme_example_{n}.inc"
        content = f'#line {first} "{readme}"\n{text}'
        # Rewritten only when changed, so that an unrelated README edit rebuilds nothing.
        if not out.exists() or out.read_text(encoding="utf-8") != content:
            out.write_text(content, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
