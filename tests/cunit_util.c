/* cunit_util.c: CUnit runner with a real exit status, temp dirs and fixture lookup for the suites. */
#include "cunit_util.h"

#include <CUnit/Basic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_tmpdir[256];

static void remove_tmpdir(void)
{
    if (g_tmpdir[0]) {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmpdir);
        if (system(cmd) != 0)
            fprintf(stderr, "warning: could not remove %s\n", g_tmpdir);
    }
}

const char *pgd_test_tmpdir(void)
{
    if (!g_tmpdir[0]) {
        const char *base = getenv("TMPDIR");
        snprintf(g_tmpdir, sizeof g_tmpdir, "%s/pgd-test-XXXXXX", base && *base ? base : "/tmp");
        if (!mkdtemp(g_tmpdir)) {
            perror("mkdtemp");
            exit(1);
        }
        atexit(remove_tmpdir);
    }
    return g_tmpdir;
}

const char *pgd_test_testdata(void)
{
    static const char *const candidates[] = {"../shared/testdata", "../../shared/testdata"};
    const char *env = getenv("PGD_TESTDATA");
    struct stat st;
    if (env && *env)
        return stat(env, &st) == 0 ? env : NULL;
    for (size_t i = 0; i < sizeof candidates / sizeof *candidates; i++)
        if (stat(candidates[i], &st) == 0 && S_ISDIR(st.st_mode))
            return candidates[i];
    return NULL;
}

static char *next_buffer(void)
{
    static char bufs[64][512];
    static unsigned k;
    return bufs[k++ % 64];
}

char *pgd_test_path(const char *name)
{
    char *p = next_buffer();
    snprintf(p, 512, "%s/%s", pgd_test_tmpdir(), name);
    return p;
}

const char *pgd_test_fixture(const char *name)
{
    const char *dir = pgd_test_testdata();
    if (!dir)
        return NULL;
    char *p = next_buffer();
    snprintf(p, 512, "%s/%s", dir, name);
    return p;
}

const char *pgd_test_build_dir(void)
{
    const char *b = getenv("PGD_BUILD");
    return b && *b ? b : "build";
}

void pgd_test_skip(const char *why)
{
    printf("\n    SKIP: %s ", why);
    fflush(stdout);
}

int pgd_test_main(const char *suite_name, const pgd_test_case *cases, int argc, char **argv)
{
    if (CU_initialize_registry() != CUE_SUCCESS) {
        fprintf(stderr, "CUnit: %s\n", CU_get_error_msg());
        return 1;
    }
    CU_pSuite suite = CU_add_suite(suite_name, NULL, NULL);
    int added = 0;
    for (const pgd_test_case *c = cases; suite && c->name; c++) {
        if (argc > 1 && strcmp(argv[1], c->name) != 0)
            continue;
        if (!CU_add_test(suite, c->name, c->fn))
            break;
        added++;
    }
    if (!suite || CU_get_error() != CUE_SUCCESS || added == 0) {
        fprintf(stderr, "CUnit: %s\n", added == 0 ? "no test case matched" : CU_get_error_msg());
        CU_cleanup_registry();
        return 1;
    }
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    /* Read the counts before cleanup: the registry frees them. */
    unsigned failed = CU_get_number_of_tests_failed() + CU_get_number_of_failures();
    unsigned ran = CU_get_number_of_tests_run();
    CU_cleanup_registry();
    if (ran != (unsigned)added)
        failed++;
    printf("\n%s: %u case(s) run, %s\n", suite_name, ran, failed ? "FAILED" : "all passed");
    return failed ? 1 : 0;
}
