/* cuda_load.c: the CUDA backend's entry points, loaded on first use from libpgd_cuda.so, so that programs
 * built with CUDA start (and the CPU backend runs) without the CUDA libraries, which only that library links. */
#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "trainer/backend.h"

#define LIB_NAME "libpgd_cuda.so"

typedef pgd_backend *(*backend_new_fn)(int device, double mem_budget_gb, pgd_err *err);
typedef int (*device_count_fn)(char *why, size_t why_len);

static struct {
    pthread_once_t once;
    backend_new_fn backend_new;
    device_count_fn device_count;
    char why[512]; /* why the library could not be loaded */
} lib = {.once = PTHREAD_ONCE_INIT};

#if PGD_HAVE_CUDA
/* dlopen PATH, keeping the first failure's reason; the handle stays open for the process's life (CUDA's
 * libraries do not expect to be unloaded). */
static void *try_open(const char *path)
{
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h && !lib.why[0])
        snprintf(lib.why, sizeof lib.why, "%s", dlerror());
    return h;
}

/* PGD_CUDA_LIB when set; else beside the program, one or two folders up (build/, build/tests/,
 * build/tests/gpu/ hold the programs of a build), then the loader's search path. */
static void load(void)
{
    const char *env = getenv("PGD_CUDA_LIB");
    void *h = NULL;
    if (env && *env) {
        h = try_open(env);
    } else {
        char exe[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
        if (n > 0) {
            exe[n] = '\0';
            static const char *const up[] = {"", "/..", "/../.."};
            char *slash = strrchr(exe, '/');
            if (slash)
                *slash = '\0';
            for (size_t i = 0; !h && slash && i < sizeof up / sizeof *up; i++) {
                char path[PATH_MAX + 32];
                snprintf(path, sizeof path, "%s%s/%s", exe, up[i], LIB_NAME);
                if (access(path, F_OK) == 0)
                    h = try_open(path);
            }
        }
        if (!h)
            h = try_open(LIB_NAME);
    }
    if (!h)
        return;
    lib.backend_new = (backend_new_fn)(uintptr_t)dlsym(h, "pgd_cuda_lib_backend_new");
    lib.device_count = (device_count_fn)(uintptr_t)dlsym(h, "pgd_cuda_lib_device_count");
    if (!lib.backend_new || !lib.device_count) {
        snprintf(lib.why, sizeof lib.why, "%s lacks the backend's entry points", LIB_NAME);
        lib.backend_new = NULL;
        lib.device_count = NULL;
    }
}
#else
static void load(void)
{
    snprintf(lib.why, sizeof lib.why,
             "this pgd was built without CUDA (the Makefile found no nvcc and cudnn.h under CUDA_HOME)");
}
#endif

pgd_backend *pgd_backend_cuda_new(int device, double mem_budget_gb, pgd_err *err)
{
    pthread_once(&lib.once, load);
    if (!lib.backend_new) {
        pgd_fail(err, PGD_EINVAL, "cuda backend: %s; use the cpu backend, or set PGD_CUDA_LIB to %s", lib.why,
                 LIB_NAME);
        return NULL;
    }
    return lib.backend_new(device, mem_budget_gb, err);
}

int pgd_cuda_device_count(char *why, size_t why_len)
{
    pthread_once(&lib.once, load);
    if (!lib.device_count) {
        if (why && why_len)
            snprintf(why, why_len, "cannot load %s: %s", LIB_NAME, lib.why);
        return 0;
    }
    return lib.device_count(why, why_len);
}
