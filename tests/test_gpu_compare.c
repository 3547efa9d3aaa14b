/* test_gpu_compare.c: the PyTorch comparison's plumbing without PyTorch or a GPU: tests/gpu/torch_compare.py
 * --smoke runs tests/gpu/gpu_compare on the CPU backend (weights, inputs, every output file, the dropout-mask
 * rule) and must pass. The comparison itself needs make gpu-check. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "cunit_util.h"

static void test_smoke(void)
{
    struct stat st;
    if (stat("tests/gpu/torch_compare.py", &st) != 0) {
        pgd_test_skip("tests/gpu/torch_compare.py not found: run from the project root");
        return;
    }
    if (system("python3 -c '' 2>/dev/null") != 0) {
        pgd_test_skip("no python3");
        return;
    }
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "python3 tests/gpu/torch_compare.py --smoke --tool '%s/tests/gpu/gpu_compare' --work '%s' 2>&1",
             pgd_test_build_dir(), pgd_test_path("smoke"));
    printf("\n    %s\n", cmd);
    fflush(stdout);
    int rc = system(cmd);
    CU_ASSERT_EQUAL(rc, 0);
}

int main(int argc, char **argv)
{
    static const pgd_test_case cases[] = {
        {"smoke", test_smoke},
        {NULL, NULL},
    };
    return pgd_test_main("gpu_compare", cases, argc, argv);
}
