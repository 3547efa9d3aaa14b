/* wire_zmq.h: sending and receiving pgd wire messages over ZeroMQ sockets. */
#ifndef PGD_WIRE_ZMQ_H
#define PGD_WIRE_ZMQ_H

#include <zmq.h>

#include "wire.h"

/* flags of pgd_wire_send / pgd_wire_recv */
#define PGD_WIRE_DONTWAIT 1 /* fail with PGD_EBUSY instead of blocking */

/* One received message. It owns its frames (zmq messages, no copies); msg points into them. Call
 * pgd_wire_rx_close after every pgd_wire_recv, whatever it returned. */
typedef struct pgd_wire_rx {
    pgd_wire_msg msg;
    zmq_msg_t routing;                        /* the routing id, when has_routing */
    int has_routing;
    zmq_msg_t parts[1 + PGD_WIRE_MAX_FRAMES]; /* header and payload frames */
    size_t nparts;                            /* parts held */
    size_t nreceived;                         /* frames the message had (routing id excluded) */
} pgd_wire_rx;

/* Send one message: the routing id first when routing_id is not NULL (ROUTER sockets), then the header
 * built by pgd_wire_encode from h and the payload frames, then the n payload frames. The bytes are copied
 * into zmq messages, so the caller's buffers are free again on return. EINTR is retried. With
 * PGD_WIRE_DONTWAIT, a socket that cannot take the message now fails with PGD_EBUSY and nothing is sent;
 * once the first frame is queued the rest follow (zmq queues multipart messages whole). Returns 0, or -1:
 * PGD_EINVAL for a message the encoder refuses (nothing sent), PGD_ENOENT for an unknown ROUTER peer
 * (ZMQ_ROUTER_MANDATORY), PGD_EIO otherwise. */
int pgd_wire_send(void *sock, const pgd_wire_frame *routing_id, const pgd_wire_header *h,
                  const pgd_wire_frame *frames, size_t n, int flags, pgd_err *err);

/* Called by ZeroMQ when it is done with a buffer given by pgd_wire_send_zc: from any thread (usually its I/O
 * thread), at any time after the send, at the latest in zmq_ctx_term. Must be thread-safe towards the caller. */
typedef void pgd_wire_free_fn(void *data, void *hint);

/* As pgd_wire_send, but payload frame `give` (< n, data not NULL) is not copied: its buffer is handed to
 * ZeroMQ, which writes it to the socket from where it lies and then calls free_fn(frames[give].data, hint)
 * once. The caller must not change or free the buffer after handing it over. *given (never NULL) tells who
 * owns it on return: 1 ZeroMQ (always after a return of 0), 0 still the caller (free_fn is then never
 * called): a refused message (PGD_EINVAL), PGD_EBUSY / PGD_ENOENT (nothing sent), or a failure before or
 * while sending that frame. The other frames are copied as in pgd_wire_send. */
int pgd_wire_send_zc(void *sock, const pgd_wire_frame *routing_id, const pgd_wire_header *h,
                     const pgd_wire_frame *frames, size_t n, size_t give, pgd_wire_free_fn *free_fn, void *hint,
                     int flags, int *given, pgd_err *err);

/* ZeroMQ allocates every received frame itself (malloc in its I/O thread). By default glibc maps large
 * blocks afresh (mmap) and gives freed memory back to the system, so each large message faults in new pages
 * (48 MiB messages ran under 1 GB/s for that). Call this once at process start, before the first socket, in
 * processes that receive large messages: freed blocks then stay mapped and are reused. Best effort: does
 * nothing under an allocator without these settings (sanitizers). Memory is held at its high mark. */
void pgd_wire_keep_pages(void);

/* Receive one whole message into rx (its previous contents are overwritten: close it first). With
 * want_routing_id the first frame is taken as the routing id (ROUTER sockets). Every frame of the message
 * is consumed, good or bad, so the socket never holds half a message. Then the message is decoded: on
 * success rx->msg is filled and 0 returned. On failure -1: PGD_EBUSY when PGD_WIRE_DONTWAIT is given and
 * nothing is waiting (or ZMQ_RCVTIMEO expired), PGD_EIO for a socket error, PGD_EFORMAT / PGD_ECORRUPT for
 * a bad message, with rx->msg.reason set (pass it to pgd_wire_stats_reject). */
int pgd_wire_recv(void *sock, pgd_wire_rx *rx, int want_routing_id, int flags, pgd_err *err);

/* The routing id of a received message ({NULL, 0} when there is none). Points into rx. */
pgd_wire_frame pgd_wire_rx_routing_id(const pgd_wire_rx *rx);

/* Release the frames rx holds. Safe to call twice, and on a zeroed rx. */
void pgd_wire_rx_close(pgd_wire_rx *rx);

/* ZeroMQ CURVE (encryption and server authentication, for links to other hosts). A key file holds one key
 * as the 40 Z85 characters zmq_curve_keypair gives, on its first line that is not empty or a '#' comment. */
#define PGD_WIRE_CURVE_KEY 40

/* Read a key file into key (41 bytes, NUL-terminated); checks the 40 characters decode as Z85. 0, or -1
 * (PGD_EINVAL naming the file: missing, unreadable, not a key). */
int pgd_wire_curve_read(const char *path, char key[PGD_WIRE_CURVE_KEY + 1], pgd_err *err);

/* Write a new key pair: PREFIX.key (the secret key, mode 0600) and PREFIX.pub (the public key, mode 0644),
 * refusing to overwrite. 0, or -1 (PGD_EINVAL when libzmq lacks CURVE, PGD_EIO for the files). */
int pgd_wire_curve_keygen(const char *prefix, pgd_err *err);

/* Make sock a CURVE server with the secret key in secret_file (its public key is derived). Before bind.
 * Fails with PGD_EINVAL and a clear message when libzmq was built without CURVE. */
int pgd_wire_curve_server(void *sock, const char *secret_file, pgd_err *err);

/* Make sock a CURVE client of the server whose public key is in server_public_file, with the key pair of
 * client_secret_file, or a fresh one when that is NULL. Before connect. */
int pgd_wire_curve_client(void *sock, const char *server_public_file, const char *client_secret_file, pgd_err *err);

#endif
