/* manifest.c: reading slide manifests (RFC 4180 CSV, PANDA or plain columns) into id/path/label entries. */
#include "manifest.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "file.h"

#define MAX_FILE_BYTES ((size_t)1 << 30)

/* ---- CSV records -------------------------------------------------------------------------------- */

typedef struct csv {
    const char *p, *end;
    int line; /* line of p */
} csv;

/* One record: fields are NUL-terminated strings packed in buf, field i at buf + off[i]. */
typedef struct record {
    char *buf;
    size_t len, cap;
    size_t *off;
    size_t nfields, fcap;
    int line; /* where the record starts */
} record;

static int is_blank(char c)
{
    return c == ' ' || c == '\t';
}

static int rec_putc(record *r, char c, pgd_err *err)
{
    if (r->len == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 256;
        char *b = realloc(r->buf, cap);
        if (!b)
            return pgd_fail(err, PGD_ENOMEM, "out of memory");
        r->buf = b;
        r->cap = cap;
    }
    r->buf[r->len++] = c;
    return 0;
}

static int rec_begin_field(record *r, pgd_err *err)
{
    if (r->nfields == r->fcap) {
        size_t cap = r->fcap ? r->fcap * 2 : 16;
        size_t *o = realloc(r->off, cap * sizeof *o);
        if (!o)
            return pgd_fail(err, PGD_ENOMEM, "out of memory");
        r->off = o;
        r->fcap = cap;
    }
    r->off[r->nfields++] = r->len;
    return 0;
}

static const char *rec_field(const record *r, size_t i)
{
    return r->buf + r->off[i];
}

/* Skip lines holding nothing but blanks. */
static void skip_blank_lines(csv *c)
{
    for (;;) {
        const char *q = c->p;
        while (q < c->end && (is_blank(*q) || *q == '\r'))
            q++;
        if (q < c->end && *q != '\n')
            return;
        if (q == c->end) {
            c->p = q;
            return;
        }
        c->p = q + 1;
        c->line++;
    }
}

/* A quoted field from the opening quote at c->p; "" is a quote, newlines are kept. */
static int quoted_field(csv *c, record *r, pgd_err *err)
{
    int opened = c->line;
    for (c->p++;; c->p++) {
        if (c->p == c->end)
            return pgd_fail(err, PGD_EFORMAT, "line %d: unterminated quoted field (opened on line %d)", r->line,
                            opened);
        char ch = *c->p;
        if (ch == '"') {
            if (c->p + 1 < c->end && c->p[1] == '"') {
                c->p++;
            } else {
                c->p++;
                break;
            }
        } else if (ch == '\n') {
            c->line++;
        } else if (ch == '\0') {
            return pgd_fail(err, PGD_EFORMAT, "line %d: NUL byte", c->line);
        }
        if (rec_putc(r, ch, err))
            return -1;
    }
    while (c->p < c->end && is_blank(*c->p))
        c->p++;
    if (c->p < c->end && *c->p == '\r' && (c->p + 1 == c->end || c->p[1] == '\n'))
        c->p++;
    if (c->p < c->end && *c->p != ',' && *c->p != '\n')
        return pgd_fail(err, PGD_EFORMAT, "line %d: unexpected '%c' after a closing quote", c->line, *c->p);
    return 0;
}

/* An unquoted field up to ',' or the end of the line, blanks around it trimmed. */
static int plain_field(csv *c, record *r, pgd_err *err)
{
    const char *s = c->p;
    while (c->p < c->end && *c->p != ',' && *c->p != '\n') {
        if (*c->p == '"')
            return pgd_fail(err, PGD_EFORMAT, "line %d: quote inside an unquoted field", c->line);
        if (*c->p == '\0')
            return pgd_fail(err, PGD_EFORMAT, "line %d: NUL byte", c->line);
        c->p++;
    }
    const char *e = c->p;
    if (e > s && e[-1] == '\r')
        e--;
    while (e > s && is_blank(e[-1]))
        e--;
    for (; s < e; s++)
        if (rec_putc(r, *s, err))
            return -1;
    return 0;
}

/* Read the next non-blank record. Returns 1 with a record, 0 at the end of the text, -1 on error. */
static int read_record(csv *c, record *r, pgd_err *err)
{
    r->len = 0;
    r->nfields = 0;
    skip_blank_lines(c);
    if (c->p == c->end)
        return 0;
    r->line = c->line;
    for (;;) {
        if (rec_begin_field(r, err))
            return -1;
        while (c->p < c->end && is_blank(*c->p))
            c->p++;
        int rc = c->p < c->end && *c->p == '"' ? quoted_field(c, r, err) : plain_field(c, r, err);
        if (rc || rec_putc(r, '\0', err))
            return -1;
        if (c->p == c->end)
            return 1;
        if (*c->p++ == '\n') {
            c->line++;
            return 1;
        }
    }
}

static void record_free(record *r)
{
    free(r->buf);
    free(r->off);
}

/* ---- columns ------------------------------------------------------------------------------------ */

enum { COL_IMAGE_ID, COL_PROVIDER, COL_ISUP, COL_GLEASON, COL_PATH, COL_LABEL, COL_ID, NCOLS };
static const char *const col_names[NCOLS] = {"image_id", "data_provider", "isup_grade", "gleason_score",
                                             "path",     "label",         "id"};

typedef struct columns {
    int at[NCOLS]; /* field index of each known column, -1 when absent */
    size_t count;  /* fields per record */
    pgd_manifest_kind kind;
} columns;

/* The header fields joined with ',' (for messages). */
static void header_text(const record *r, char *buf, size_t cap)
{
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < r->nfields && used < cap; i++) {
        int n = snprintf(buf + used, cap - used, "%s%s", i ? "," : "", rec_field(r, i));
        if (n < 0)
            break;
        used += (size_t)n;
    }
}

static int read_header(const record *r, columns *cols, pgd_err *err)
{
    for (int k = 0; k < NCOLS; k++)
        cols->at[k] = -1;
    cols->count = r->nfields;
    for (size_t i = 0; i < r->nfields; i++) {
        for (int k = 0; k < NCOLS; k++) {
            if (strcmp(rec_field(r, i), col_names[k]) != 0)
                continue;
            if (cols->at[k] >= 0)
                return pgd_fail(err, PGD_EFORMAT, "line %d: column '%s' appears twice in the header", r->line,
                                col_names[k]);
            cols->at[k] = (int)i;
        }
    }
    int panda = cols->at[COL_IMAGE_ID] >= 0, plain = cols->at[COL_PATH] >= 0;
    if (panda && plain)
        return pgd_fail(err, PGD_EFORMAT, "line %d: header has both image_id and path columns: which format?",
                        r->line);
    if (!panda && !plain) {
        char text[200];
        header_text(r, text, sizeof text);
        return pgd_fail(err, PGD_EFORMAT, "line %d: no image_id or path column in header '%s'", r->line, text);
    }
    cols->kind = panda ? PGD_MANIFEST_PANDA : PGD_MANIFEST_PLAIN;
    return 0;
}

/* ---- entries ------------------------------------------------------------------------------------ */

/* Why id is not usable as a slide id, or NULL when it is. */
static const char *id_problem(const char *id)
{
    size_t n = strlen(id);
    if (n == 0)
        return "is empty";
    if (n > PGD_MANIFEST_MAX_ID)
        return "is longer than 63 bytes";
    if (strcmp(id, ".") == 0 || strcmp(id, "..") == 0)
        return "is not a file name";
    for (const unsigned char *p = (const unsigned char *)id; *p; p++) {
        if (*p == '/')
            return "contains '/'";
        if (*p < 0x20 || *p == 0x7f)
            return "contains a control character";
    }
    return NULL;
}

int pgd_manifest_id_ok(const char *id)
{
    return id && !id_problem(id);
}

const char *pgd_manifest_kind_name(pgd_manifest_kind kind)
{
    return kind == PGD_MANIFEST_PANDA ? "panda" : kind == PGD_MANIFEST_PLAIN ? "plain" : "?";
}

/* Decimal digits only, value 0..max. */
static int parse_label(const char *s, int max, int *out)
{
    long v = 0;
    if (!*s)
        return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        v = v * 10 + (*s - '0');
        if (v > max)
            return -1;
    }
    *out = (int)v;
    return 0;
}

/* dir + "/" + name + ext as a new string ("" dir: name + ext). */
static char *join_path(const char *dir, const char *name, const char *ext)
{
    size_t nd = strlen(dir);
    const char *sep = nd && dir[nd - 1] != '/' ? "/" : "";
    size_t n = nd + strlen(sep) + strlen(name) + strlen(ext) + 1;
    char *s = malloc(n);
    if (s)
        snprintf(s, n, "%s%s%s%s", dir, sep, name, ext);
    return s;
}

/* The file name of path without its last extension ("a/b/x.svs" -> "x"; ".hidden" stays). */
static char *stem(const char *path)
{
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    const char *dot = strrchr(base, '.');
    size_t n = dot && dot != base ? (size_t)(dot - base) : strlen(base);
    return strndup(base, n);
}

static char *dup_or_null(const record *r, int col)
{
    return col >= 0 ? strdup(rec_field(r, (size_t)col)) : NULL;
}

/* Slide paths must fit the wire's job path. */
static int check_path_len(const record *r, const pgd_manifest_entry *e, pgd_err *err)
{
    if (strlen(e->path) > PGD_MANIFEST_MAX_PATH)
        return pgd_fail(err, PGD_EFORMAT, "line %d: path is longer than %d bytes", r->line, PGD_MANIFEST_MAX_PATH);
    return 0;
}

typedef struct ctx {
    const char *name;     /* manifest name for messages */
    const char *base_dir; /* where slides or relative paths are */
    const char *ext;
    columns cols;
} ctx;

static int panda_entry(const ctx *x, const record *r, pgd_manifest_entry *e, pgd_err *err)
{
    const char *id = rec_field(r, (size_t)x->cols.at[COL_IMAGE_ID]);
    const char *why = id_problem(id);
    if (!*id)
        return pgd_fail(err, PGD_EFORMAT, "line %d: empty image_id", r->line);
    if (why)
        return pgd_fail(err, PGD_EFORMAT, "line %d: image_id '%s' %s", r->line, id, why);
    if (x->cols.at[COL_ISUP] >= 0) {
        const char *g = rec_field(r, (size_t)x->cols.at[COL_ISUP]);
        if (parse_label(g, 5, &e->label))
            return pgd_fail(err, PGD_EFORMAT, "line %d: isup_grade '%s' is not an integer in 0..5", r->line, g);
    }
    e->id = strdup(id);
    e->path = join_path(x->base_dir, id, x->ext);
    e->provider = dup_or_null(r, x->cols.at[COL_PROVIDER]);
    e->gleason = dup_or_null(r, x->cols.at[COL_GLEASON]);
    if (!e->id || !e->path || (x->cols.at[COL_PROVIDER] >= 0 && !e->provider) ||
        (x->cols.at[COL_GLEASON] >= 0 && !e->gleason))
        return pgd_fail(err, PGD_ENOMEM, "out of memory");
    return check_path_len(r, e, err); /* a long slide_dir can push it over */
}

static int plain_entry(const ctx *x, const record *r, pgd_manifest_entry *e, pgd_err *err)
{
    const char *path = rec_field(r, (size_t)x->cols.at[COL_PATH]);
    if (!*path)
        return pgd_fail(err, PGD_EFORMAT, "line %d: empty path", r->line);
    if (x->cols.at[COL_LABEL] >= 0) {
        const char *l = rec_field(r, (size_t)x->cols.at[COL_LABEL]);
        if (parse_label(l, PGD_MANIFEST_MAX_LABEL, &e->label))
            return pgd_fail(err, PGD_EFORMAT, "line %d: label '%s' is not an integer in 0..%d", r->line, l,
                            PGD_MANIFEST_MAX_LABEL);
    }
    e->path = path[0] == '/' ? strdup(path) : join_path(x->base_dir, path, "");
    e->id = x->cols.at[COL_ID] >= 0 ? strdup(rec_field(r, (size_t)x->cols.at[COL_ID])) : stem(path);
    if (!e->path || !e->id)
        return pgd_fail(err, PGD_ENOMEM, "out of memory");
    if (check_path_len(r, e, err))
        return -1;
    const char *why = id_problem(e->id);
    if (!*e->id && x->cols.at[COL_ID] >= 0)
        return pgd_fail(err, PGD_EFORMAT, "line %d: empty id", r->line);
    if (why && x->cols.at[COL_ID] >= 0)
        return pgd_fail(err, PGD_EFORMAT, "line %d: id '%s' %s", r->line, e->id, why);
    if (why)
        return pgd_fail(err, PGD_EFORMAT, "line %d: id '%s' (the file name of path '%s') %s", r->line, e->id,
                        path, why);
    return 0;
}

static int add_entry(const ctx *x, const record *r, pgd_manifest *m, size_t *cap, pgd_err *err)
{
    if (r->nfields != x->cols.count)
        return pgd_fail(err, PGD_EFORMAT, "line %d: expected %zu field%s, found %zu", r->line, x->cols.count,
                        x->cols.count == 1 ? "" : "s", r->nfields);
    if (m->count == *cap) {
        size_t n = *cap ? *cap * 2 : 64;
        pgd_manifest_entry *e = realloc(m->entries, n * sizeof *e);
        if (!e)
            return pgd_fail(err, PGD_ENOMEM, "out of memory");
        m->entries = e;
        *cap = n;
    }
    pgd_manifest_entry *e = &m->entries[m->count++];
    memset(e, 0, sizeof *e);
    e->label = -1;
    e->line = r->line;
    if (x->cols.kind == PGD_MANIFEST_PANDA ? panda_entry(x, r, e, err) : plain_entry(x, r, e, err))
        return -1;
    if (e->label > m->max_label)
        m->max_label = e->label;
    return 0;
}

/* ---- duplicates --------------------------------------------------------------------------------- */

static int by_id_then_line(const void *a, const void *b, void *arg)
{
    const pgd_manifest_entry *all = arg;
    const pgd_manifest_entry *x = &all[*(const size_t *)a], *y = &all[*(const size_t *)b];
    int c = strcmp(x->id, y->id);
    return c ? c : (x->line > y->line) - (x->line < y->line);
}

/* Report the duplicate that comes first in the file (the smallest line of a repeat) and where its id was
 * first seen. Sorting keeps this O(n log n) for large manifests. */
static int check_unique(const ctx *x, const pgd_manifest *m, pgd_err *err)
{
    if (m->count < 2)
        return 0;
    size_t *idx = malloc(m->count * sizeof *idx);
    if (!idx)
        return pgd_fail(err, PGD_ENOMEM, "out of memory");
    for (size_t i = 0; i < m->count; i++)
        idx[i] = i;
    qsort_r(idx, m->count, sizeof *idx, by_id_then_line, m->entries);
    const pgd_manifest_entry *first = NULL, *repeat = NULL;
    for (size_t i = 1, run = 0; i < m->count; i++) {
        const pgd_manifest_entry *b = &m->entries[idx[i]];
        if (strcmp(m->entries[idx[run]].id, b->id) != 0) {
            run = i;
        } else if (!repeat || b->line < repeat->line) {
            first = &m->entries[idx[run]];
            repeat = b;
        }
    }
    free(idx);
    if (!repeat)
        return 0;
    const char *what = x->cols.kind == PGD_MANIFEST_PANDA ? "image_id" : "id";
    return pgd_fail(err, PGD_EFORMAT, "line %d: %s '%s' already on line %d", repeat->line, what, repeat->id,
                    first->line);
}

/* ---- loading ------------------------------------------------------------------------------------ */

void pgd_manifest_free(pgd_manifest **mp)
{
    if (!mp || !*mp)
        return;
    pgd_manifest *m = *mp;
    for (size_t i = 0; i < m->count; i++) {
        free(m->entries[i].id);
        free(m->entries[i].path);
        free(m->entries[i].provider);
        free(m->entries[i].gleason);
    }
    free(m->entries);
    free(m);
    *mp = NULL;
}

/* The folder part of a path: "a/b.csv" -> "a", "/b.csv" -> "/", "b.csv" -> "". */
static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return strdup("");
    return strndup(path, slash == path ? 1 : (size_t)(slash - path));
}

static int parse_rows(ctx *x, csv *c, pgd_manifest *m, pgd_err *err)
{
    record r = {0};
    size_t cap = 0;
    int rc = read_record(c, &r, err);
    if (rc == 0)
        pgd_fail(err, PGD_EFORMAT, "no header line (empty file)");
    if (rc <= 0 || read_header(&r, &x->cols, err))
        goto fail;
    m->kind = x->cols.kind;
    m->labeled = x->cols.at[x->cols.kind == PGD_MANIFEST_PANDA ? COL_ISUP : COL_LABEL] >= 0;
    while ((rc = read_record(c, &r, err)) > 0)
        if (add_entry(x, &r, m, &cap, err))
            goto fail;
    if (rc < 0 || check_unique(x, m, err))
        goto fail;
    record_free(&r);
    return 0;
fail:
    record_free(&r);
    return -1;
}

int pgd_manifest_load_text(pgd_manifest **out, const char *name, const char *text, size_t len,
                           const char *slide_dir, const char *ext, pgd_err *err)
{
    *out = NULL;
    pgd_err e = PGD_ERR_INIT;
    char *dir = slide_dir ? strdup(slide_dir) : dir_of(name);
    pgd_manifest *m = calloc(1, sizeof *m);
    if (!dir || !m) {
        pgd_fail(&e, PGD_ENOMEM, "out of memory");
        goto fail;
    }
    m->max_label = -1;
    ctx x = {.name = name, .base_dir = dir, .ext = ext ? ext : ""};
    csv c = {.p = text, .end = text + len, .line = 1};
    if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0)
        c.p += 3;
    if (parse_rows(&x, &c, m, &e))
        goto fail;
    free(dir);
    *out = m;
    return 0;
fail:
    free(dir);
    pgd_manifest_free(&m);
    /* "train.csv line 9: ..." or "train.csv: no header line" */
    return pgd_fail(err, e.code, "%s%s%s", name, strncmp(e.msg, "line ", 5) == 0 ? " " : ": ", e.msg);
}

int pgd_manifest_load(pgd_manifest **out, const char *csv_path, const char *slide_dir, const char *ext,
                      pgd_err *err)
{
    char *text = NULL;
    size_t len = 0;
    *out = NULL;
    if (pgd_file_read(csv_path, MAX_FILE_BYTES, &text, &len, err))
        return -1;
    int rc = pgd_manifest_load_text(out, csv_path, text, len, slide_dir, ext, err);
    free(text);
    return rc;
}
