/*
 * libFuzzer target for the isolated-worker frame codec. Built by
 * test/fuzz/run.sh (clang -fsanitize=fuzzer,address,undefined). Crashes it
 * finds go to test/fuzz/regressions/, which test_frame replays in ctest.
 */
#include "test/isolate/fuzz/frame_fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_frame_one(data, size);
    return 0;
}
