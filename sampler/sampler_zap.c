/* sampler_zap.c: the sampler's ZAP handler (ZeroMQ RFC 27): with CURVE on the loaders' socket, only loaders
 * whose public key is in curve_clients_file complete the handshake. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "sampler/sampler_int.h"

#define ZAP_ENDPOINT "inproc://zeromq.zap.01"
#define ZAP_FRAMES 7 /* version, request id, domain, address, routing id, mechanism, credentials */

/* Add one key line (40 Z85 characters) to the list. */
static int add_key(pgd_sampler *s, const char *path, int line, const char *text, pgd_err *err)
{
    uint8_t raw[32];
    if (strlen(text) != PGD_WIRE_CURVE_KEY || !zmq_z85_decode(raw, text))
        return pgd_fail(err, PGD_EINVAL, "'curve_clients_file': %s line %d: expected a public key of %d Z85 characters",
                        path, line, PGD_WIRE_CURVE_KEY);
    if (s->nzap_keys % 16 == 0) {
        uint8_t(*k)[32] = realloc(s->zap_keys, (s->nzap_keys + 16) * sizeof *k);
        if (!k)
            return pgd_fail(err, PGD_ENOMEM, "'curve_clients_file': %s: out of memory", path);
        s->zap_keys = k;
    }
    memcpy(s->zap_keys[s->nzap_keys++], raw, 32);
    return 0;
}

/* Read the allow-list: one key per line; blank lines and lines starting with '#' are skipped (a .pub file
 * written by keygen is a valid list of one). */
static int load_keys(pgd_sampler *s, const char *path, pgd_err *err)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        pgd_fail_errno(err, PGD_EINVAL, "'curve_clients_file': open %s", path);
        return -1;
    }
    char buf[256];
    int line = 0, rc = 0;
    while (rc == 0 && fgets(buf, sizeof buf, f)) {
        line++;
        size_t n = strcspn(buf, "\r\n");
        buf[n] = '\0';
        while (n > 0 && (buf[n - 1] == ' ' || buf[n - 1] == '\t'))
            buf[--n] = '\0';
        const char *t = buf + strspn(buf, " \t");
        if (*t == '\0' || *t == '#')
            continue;
        rc = add_key(s, path, line, t, err);
    }
    fclose(f);
    if (rc == 0 && s->nzap_keys == 0)
        pgd_warn("'curve_clients_file' %s lists no key: every loader will be refused", path);
    return rc;
}

int pgd_sampler_zap_open(pgd_sampler *s, pgd_err *err)
{
    if (!s->o.curve_clients_file)
        return 0;
    if (!s->o.curve_secret_file)
        return pgd_fail(err, PGD_EINVAL, "'curve_clients_file' needs 'curve_secret_file' (CURVE on the loaders' socket)");
    if (load_keys(s, s->o.curve_clients_file, err) != 0)
        return -1;
    s->zap = zmq_socket(s->ctx, ZMQ_REP);
    int linger = 0;
    if (!s->zap || zmq_setsockopt(s->zap, ZMQ_LINGER, &linger, sizeof linger) != 0)
        return pgd_fail_errno(err, PGD_EIO, "ZAP handler socket");
    if (zmq_bind(s->zap, ZAP_ENDPOINT) != 0)
        return pgd_fail_errno(err, PGD_EIO, "ZAP handler: bind %s", ZAP_ENDPOINT);
    pgd_info("loaders' CURVE keys checked against %s (%u keys)", s->o.curve_clients_file, s->nzap_keys);
    return 0;
}

static int listed(const pgd_sampler *s, const uint8_t *key)
{
    for (uint32_t i = 0; i < s->nzap_keys; i++)
        if (memcmp(s->zap_keys[i], key, 32) == 0)
            return 1;
    return 0;
}

static int send_frame(void *sock, const void *data, size_t len, int more)
{
    while (zmq_send(sock, data, len, more ? ZMQ_SNDMORE : 0) < 0)
        if (errno != EINTR)
            return -1;
    return 0;
}

/* Answer one ZAP request: 200 for a CURVE client whose key is listed, 400 for anything else. */
static int answer(pgd_sampler *s, zmq_msg_t *f, size_t n)
{
    int ok = 0;
    const char *why = "not a ZAP 1.0 CURVE request";
    if (n == ZAP_FRAMES && zmq_msg_size(&f[0]) == 3 && memcmp(zmq_msg_data(&f[0]), "1.0", 3) == 0 &&
        zmq_msg_size(&f[5]) == 5 && memcmp(zmq_msg_data(&f[5]), "CURVE", 5) == 0 && zmq_msg_size(&f[6]) == 32) {
        ok = listed(s, zmq_msg_data(&f[6]));
        why = "key not in curve_clients_file";
    }
    if (!ok) {
        s->n.zap_refused++;
        char z85[PGD_WIRE_CURVE_KEY + 1] = "?";
        if (n == ZAP_FRAMES && zmq_msg_size(&f[6]) == 32)
            zmq_z85_encode(z85, zmq_msg_data(&f[6]), 32);
        if (s->n.zap_refused == 1)
            pgd_warn("refused a loader (%s): %s; later refusals are only counted", why, z85);
        else
            pgd_debug("refused a loader (%s): %s", why, z85);
    }
    const char *code = ok ? "200" : "400", *text = ok ? "OK" : why;
    size_t idlen = n >= 2 ? zmq_msg_size(&f[1]) : 0;
    const void *id = n >= 2 ? zmq_msg_data(&f[1]) : "";
    if (send_frame(s->zap, "1.0", 3, 1) || send_frame(s->zap, id, idlen, 1) || send_frame(s->zap, code, 3, 1) ||
        send_frame(s->zap, text, strlen(text), 1) || send_frame(s->zap, "", 0, 1) || send_frame(s->zap, "", 0, 0)) {
        snprintf(s->reason, sizeof s->reason, "ZAP handler: send: %s", zmq_strerror(errno));
        return -1;
    }
    return 0;
}

int pgd_sampler_zap_rx(pgd_sampler *s)
{
    if (!s->zap)
        return 1;
    zmq_msg_t f[ZAP_FRAMES + 1];
    size_t n = 0;
    int more = 1;
    while (more) {
        zmq_msg_t *m = &f[n < ZAP_FRAMES ? n : ZAP_FRAMES];
        zmq_msg_init(m);
        if (zmq_msg_recv(m, s->zap, n == 0 ? ZMQ_DONTWAIT : 0) < 0) {
            int e = errno;
            zmq_msg_close(m);
            if (e == EINTR && n > 0)
                continue;
            for (size_t i = 0; i < n && i < ZAP_FRAMES; i++)
                zmq_msg_close(&f[i]);
            if (n == 0 && (e == EAGAIN || e == EINTR))
                return 1;
            snprintf(s->reason, sizeof s->reason, "ZAP handler: receive: %s", zmq_strerror(e));
            return -1;
        }
        more = zmq_msg_more(m);
        if (n >= ZAP_FRAMES)
            zmq_msg_close(m); /* extra frames: counted, not kept (the request is then refused) */
        n++;
    }
    int rc = answer(s, f, n);
    for (size_t i = 0; i < n && i < ZAP_FRAMES; i++)
        zmq_msg_close(&f[i]);
    return rc;
}

void pgd_sampler_zap_close(pgd_sampler *s)
{
    if (s->zap)
        zmq_close(s->zap);
    s->zap = NULL;
    free(s->zap_keys);
    s->zap_keys = NULL;
    s->nzap_keys = 0;
}
