/* tfevents.h: TensorBoard event files: TFRecord framing (masked CRC-32C) around Event protobufs of scalars. */
#ifndef PGD_TFEVENTS_H
#define PGD_TFEVENTS_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

/* The file a writer appends to in its folder (TensorBoard reads every file with "tfevents" in its name). */
#define PGD_TFEVENTS_FILE "events.out.tfevents.0.pgd"
#define PGD_TFEVENTS_VERSION "brain.Event:2"

typedef struct pgd_tfevents pgd_tfevents;

/* Open DIR/PGD_TFEVENTS_FILE for appending (DIR is created when missing). A new or empty file first gets the
 * Event that names the format version (file_version "brain.Event:2"), so several processes may append to one
 * run's file one after another. NULL with err on failure. */
pgd_tfevents *pgd_tfevents_open(const char *dir, pgd_err *err);

/* Append one Event {wall_time, step, summary {value {tag, simple_value}} x n} as one TFRecord, flushed. */
int pgd_tfevents_scalars(pgd_tfevents *t, double wall_time, int64_t step, int n, const char *const *tags,
                         const float *values, pgd_err *err);

/* Close and set *t = NULL (NULL is fine). */
void pgd_tfevents_close(pgd_tfevents **t);

/* --- the encoding, for readers and tests --- */

/* TFRecord's masked CRC: ((crc >> 15) | (crc << 17)) + 0xa282ead8 of the CRC-32C. */
uint32_t pgd_tfrecord_masked_crc(const void *data, size_t len);

/* Encode an Event into buf[cap]: wall_time, step, and either file_version (version != NULL) or a Summary of
 * n simple_value scalars. Returns its length, or 0 when it does not fit. */
size_t pgd_tfevents_encode(uint8_t *buf, size_t cap, double wall_time, int64_t step, const char *version, int n,
                           const char *const *tags, const float *values);

/* Frame data[len] as a TFRecord into buf[cap] (len + 16 bytes): u64 length, u32 masked CRC of the length's 8
 * bytes, the data, u32 masked CRC of the data (little-endian). Returns the record's size, 0 when it does not fit. */
size_t pgd_tfrecord_frame(uint8_t *buf, size_t cap, const uint8_t *data, size_t len);

/* Read the record at buf[*off..len): checks both CRCs (PGD_ECORRUPT naming the offset) and the length
 * (PGD_EFORMAT when truncated); *data / *dlen point into buf, *off moves past the record. */
int pgd_tfrecord_next(const uint8_t *buf, size_t len, size_t *off, const uint8_t **data, size_t *dlen, pgd_err *err);

#endif
