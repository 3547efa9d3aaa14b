/* json.c: JSON string escaping. */
#include "json.h"

#include <string.h>

/* The escaped form of byte c, or NULL when it is copied as it is. tmp holds \u00XX forms. */
static const char *json_escape_char(unsigned char c, char tmp[8])
{
    switch (c) {
    case '"': return "\\\"";
    case '\\': return "\\\\";
    case '\n': return "\\n";
    case '\r': return "\\r";
    case '\t': return "\\t";
    case '\b': return "\\b";
    case '\f': return "\\f";
    default:
        if (c < 0x20) {
            static const char hex[] = "0123456789abcdef";
            memcpy(tmp, "\\u00", 4);
            tmp[4] = hex[c >> 4];
            tmp[5] = hex[c & 15];
            tmp[6] = 0;
            return tmp;
        }
        return NULL;
    }
}

size_t pgd_json_escape(char *buf, size_t cap, const char *s)
{
    size_t n = 0;
    char tmp[8];
#define PUT(ch) do { if (n + 1 < cap) buf[n] = (ch); n++; } while (0)
    PUT('"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        const char *e = json_escape_char(*p, tmp);
        if (!e) {
            PUT((char)*p);
            continue;
        }
        for (; *e; e++)
            PUT(*e);
    }
    PUT('"');
#undef PUT
    if (cap)
        buf[n < cap ? n : cap - 1] = 0;
    return n;
}

void pgd_json_fput_string(FILE *f, const char *s)
{
    char tmp[8];
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        const char *e = json_escape_char(*p, tmp);
        if (e)
            fputs(e, f);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}
