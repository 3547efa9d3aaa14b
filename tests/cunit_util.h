/* cunit_util.h: the one CUnit runner every suite uses, plus small helpers shared by the tests. */
#ifndef PGD_CUNIT_UTIL_H
#define PGD_CUNIT_UTIL_H

#include <CUnit/CUnit.h>
#include <stddef.h>

typedef struct pgd_test_case {
    const char *name;
    void (*fn)(void);
} pgd_test_case;

/* Run the cases (terminated by {NULL, NULL}) as one suite. argv[1], when given, runs only the case of that
 * name. Returns the process exit code: 0 only when every assertion passed, 1 otherwise (CUnit's own
 * CU_basic_run_tests returns 0 even when tests fail, so this counts failures itself). */
int pgd_test_main(const char *suite, const pgd_test_case *cases, int argc, char **argv);

/* Say that a case was skipped and why (printed once per case; the case then passes without asserting). */
void pgd_test_skip(const char *why);

/* A fresh temporary directory for this process (removed by the runner at exit). */
const char *pgd_test_tmpdir(void);

/* The real-slide fixtures folder (../shared/testdata) or NULL when it is absent. */
const char *pgd_test_testdata(void);

/* "<tmpdir>/name", in one of 64 rotating static buffers (valid until 64 more calls). */
char *pgd_test_path(const char *name);

/* "<testdata>/name", or NULL when the fixtures are absent (the case should then skip). Same buffers. */
const char *pgd_test_fixture(const char *name);

/* The build folder holding the binaries (PGD_BUILD, default "build"). */
const char *pgd_test_build_dir(void);

#endif
