/* cli_info.c: `pgd-loader info SLIDE`: levels, mpp, bounds, background, and the backend the loader picks. */
#include <stddef.h>
#include <stdio.h>

#include "json.h"
#include "log.h"
#include "loader/cli.h"
#include "loader/slide.h"

typedef struct info_cfg {
    int json, backend;
} info_cfg;

static const pgd_cfg_opt opts[] = {
    {"json", PGD_CFG_BOOL, offsetof(info_cfg, json), "false", 0, 0, NULL, "print one JSON object instead of text", 0},
    {"backend", PGD_CFG_ENUM, offsetof(info_cfg, backend), "auto", 0, 0, "auto|openslide|fast|image",
     "the backend to open it with (auto: what the loader would use)", 0},
    {NULL},
};

static const char USAGE[] = "info SLIDE [--json] [--backend auto|openslide|fast|image]";

static void dct_text(int max_den, char *buf, size_t cap)
{
    if (max_den <= 1)
        snprintf(buf, cap, "1");
    else
        snprintf(buf, cap, "1..1/%d", max_den);
}

static void print_text(const pgd_slide_info *in)
{
    printf("slide       %s\n", in->path);
    printf("vendor      %s\n", in->vendor);
    printf("backend     %s (%s)\n", pgd_slide_backend_name(in->backend), in->why);
    printf("codec       %s\n", in->codec[0] ? in->codec : "(not known to the loader)");
    if (in->mpp_x > 0)
        printf("mpp         %.6g x %.6g (from %s)\n", in->mpp_x, in->mpp_y, in->mpp_source);
    else
        printf("mpp         unknown (no openslide.mpp-x, no resolution tags)\n");
    printf("bounds      x %lld, y %lld, %lld x %lld (%s)\n", (long long)in->bounds_x, (long long)in->bounds_y,
           (long long)in->bounds_w, (long long)in->bounds_h,
           in->has_bounds ? "openslide.bounds-*" : "the whole level 0");
    printf("background  %02x%02x%02x\n", in->background[0], in->background[1], in->background[2]);
    printf("levels      %d\n", in->nlevels);
    printf("  %5s %10s %10s %12s %12s %11s %8s\n", "LEVEL", "WIDTH", "HEIGHT", "DOWNSAMPLE", "MPP", "TILE", "DCT");
    for (int l = 0; l < in->nlevels; l++) {
        const pgd_slide_level *lv = &in->level[l];
        char tile[32] = "-", dct[16], mpp[32] = "-";
        if (lv->tile_w)
            snprintf(tile, sizeof tile, "%ux%u", lv->tile_w, lv->tile_h);
        if (in->mpp_x > 0)
            snprintf(mpp, sizeof mpp, "%.6g", pgd_slide_level_mpp(in, l));
        dct_text(lv->max_den, dct, sizeof dct);
        printf("  %5d %10lld %10lld %12.6g %12s %11s %8s\n", l, (long long)lv->w, (long long)lv->h, lv->downsample,
               mpp, tile, dct);
    }
}

static void print_json(const pgd_slide_info *in)
{
    printf("{\"path\":");
    pgd_json_fput_string(stdout, in->path);
    printf(",\"vendor\":");
    pgd_json_fput_string(stdout, in->vendor);
    printf(",\"backend\":\"%s\",\"why\":", pgd_slide_backend_name(in->backend));
    pgd_json_fput_string(stdout, in->why);
    printf(",\"codec\":");
    pgd_json_fput_string(stdout, in->codec);
    if (in->mpp_x > 0)
        printf(",\"mpp_x\":%.17g,\"mpp_y\":%.17g,\"mpp_source\":", in->mpp_x, in->mpp_y);
    else
        printf(",\"mpp_x\":null,\"mpp_y\":null,\"mpp_source\":");
    pgd_json_fput_string(stdout, in->mpp_source);
    printf(",\"bounds\":{\"x\":%lld,\"y\":%lld,\"w\":%lld,\"h\":%lld,\"from_properties\":%s}",
           (long long)in->bounds_x, (long long)in->bounds_y, (long long)in->bounds_w, (long long)in->bounds_h,
           in->has_bounds ? "true" : "false");
    printf(",\"background\":\"%02x%02x%02x\",\"levels\":[", in->background[0], in->background[1],
           in->background[2]);
    for (int l = 0; l < in->nlevels; l++) {
        const pgd_slide_level *lv = &in->level[l];
        printf("%s{\"w\":%lld,\"h\":%lld,\"downsample\":%.17g,", l ? "," : "", (long long)lv->w, (long long)lv->h,
               lv->downsample);
        if (in->mpp_x > 0)
            printf("\"mpp\":%.17g,", pgd_slide_level_mpp(in, l));
        else
            printf("\"mpp\":null,");
        printf("\"tile_w\":%u,\"tile_h\":%u,\"max_den\":%d}", lv->tile_w, lv->tile_h, lv->max_den);
    }
    printf("]}\n");
}

int pgd_loader_info_main(int argc, char **argv)
{
    info_cfg c = {0};
    const char *path = NULL;
    int rc = pgd_loader_parse_cmd(opts, &c, argc, argv, USAGE,
                                  "print what the loader sees in SLIDE and which backend it reads it with", &path);
    if (rc >= 0) {
        pgd_cfg_free(opts, &c);
        return rc;
    }
    pgd_err err = PGD_ERR_INIT;
    pgd_slide_backend want;
    const char *names[] = {"auto", "openslide", "fast", "image"};
    pgd_slide_backend_parse(names[c.backend], &want);
    pgd_slide *s = pgd_slide_open(path, want, &err);
    if (!s) {
        pgd_log_err(&err);
        rc = PGD_EXIT_FAIL;
    } else {
        if (c.json)
            print_json(pgd_slide_get_info(s));
        else
            print_text(pgd_slide_get_info(s));
        pgd_slide_close(&s);
        rc = PGD_EXIT_OK;
    }
    pgd_cfg_free(opts, &c);
    return rc;
}
