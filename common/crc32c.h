/* crc32c.h: CRC-32C (Castagnoli), the checksum of zstore blocks and wire headers. */
#ifndef PGD_CRC32C_H
#define PGD_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Extend crc over len bytes. Start with crc = 0; pgd_crc32c(0, "123456789", 9) == 0xE3069283.
 * Uses the SSE4.2 crc32 instruction when the CPU has it, a table otherwise: both give the same value. */
uint32_t pgd_crc32c(uint32_t crc, const void *data, size_t len);

/* The table implementation alone (tests compare the two). */
uint32_t pgd_crc32c_sw(uint32_t crc, const void *data, size_t len);

#endif
