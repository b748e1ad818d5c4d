/*
 * libFuzzer target for the node frame codec (runtime/node/wire.c:
 * tpi_nframe_decode, tpi_wpid_body). Built by test/node/fuzz/run.sh
 * (clang -fsanitize=fuzzer,address,undefined). Crashes it finds go to
 * test/node/fuzz/regressions/, which test/node/test_wire.c replays in
 * ctest together with the seed corpus (test/node/fuzz/corpus/).
 */
#include "test/node/fuzz/nframe_fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    nfuzz_one(data, size);
    return 0;
}
