# Compiler flags for a libFuzzer build (TXMQ_FUZZ=ON), included by the root CMakeLists.txt
# before any target is declared: every library the fuzz targets link must carry the
# coverage instrumentation, or the fuzzer is blind inside it.
#
# Only the targets in fuzz/ link libFuzzer's main (-fsanitize=fuzzer); the libraries get
# -fsanitize=fuzzer-no-link. ASan and UBSan come from TXMQ_SANITIZE, forced on here, with
# UB fatal (-fno-sanitize-recover) so that a UB report is a crash libFuzzer saves.

if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
  message(FATAL_ERROR "TXMQ_FUZZ needs clang (libFuzzer): configure with CC=clang CXX=clang++")
endif()
set(TXMQ_SANITIZE ON CACHE BOOL "Build with ASan and UBSan" FORCE)
add_compile_options(-fsanitize=fuzzer-no-link)
# Debug keeps assertions and -g; -O1 roughly triples executions per second over -O0
# without hiding anything ASan or UBSan reports.
add_compile_options(-O1)
