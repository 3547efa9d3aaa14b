/* sysinfo.c: reading the machine's description from /proc. */
#include "sysinfo.h"

#include <stdio.h>
#include <string.h>

void pgd_sysinfo_cpu_model(char *buf, size_t cap)
{
    char line[512];
    snprintf(buf, cap, "unknown CPU");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f)
        return;
    while (fgets(line, sizeof line, f)) {
        char *colon = strchr(line, ':');
        if (strncmp(line, "model name", 10) == 0 && colon) {
            snprintf(buf, cap, "%s", colon + 2);
            buf[strcspn(buf, "\n")] = 0;
            break;
        }
    }
    fclose(f);
}
