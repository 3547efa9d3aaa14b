/* crc32c.c: CRC-32C, slicing-by-8 tables with an SSE4.2 hardware path chosen at run time. */
#include "crc32c.h"

#include <pthread.h>
#include <string.h>

#define CRC32C_POLY 0x82F63B78u /* reflected Castagnoli polynomial */

/* The hardware loop runs three independent lanes of CRC_LANE bytes (the crc32 instruction has a latency of
 * three cycles and a throughput of one) and joins them by shifting a lane's CRC over CRC_LANE zero bytes. */
#define CRC_LANE 1024

static uint32_t crc_table[8][256];
static uint32_t crc_lane_shift; /* x^(8 * CRC_LANE) mod P */
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;
static int crc_have_hw;

/* a * x mod P for reflected polynomials (bit 31 holds the coefficient of x^0): one zero bit of input. */
static uint32_t gf2_times_x(uint32_t a)
{
    return (a >> 1) ^ (CRC32C_POLY & (0u - (a & 1)));
}

/* a * b mod P, reflected polynomials over GF(2). */
static uint32_t gf2_mulmod(uint32_t a, uint32_t b)
{
    uint32_t prod = 0;
    for (int i = 0; i < 32; i++) {
        if (a & (0x80000000u >> i)) /* coefficient of x^i in a */
            prod ^= b;
        b = gf2_times_x(b);
    }
    return prod;
}

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (CRC32C_POLY & (0u - (c & 1)));
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xFF];
    crc_lane_shift = 0x80000000u; /* x^0 */
    for (int i = 0; i < 8 * CRC_LANE; i++)
        crc_lane_shift = gf2_times_x(crc_lane_shift);
#if defined(__x86_64__)
    __builtin_cpu_init();
    crc_have_hw = __builtin_cpu_supports("sse4.2");
#endif
}

uint32_t pgd_crc32c_sw(uint32_t crc, const void *data, size_t len)
{
    pthread_once(&crc_once, crc_init);
    const unsigned char *p = data;
    crc = ~crc;
    while (len >= 8) {
        uint32_t lo, hi;
        memcpy(&lo, p, 4);
        memcpy(&hi, p + 4, 4);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        lo = __builtin_bswap32(lo);
        hi = __builtin_bswap32(hi);
#endif
        lo ^= crc;
        crc = crc_table[7][lo & 0xFF] ^ crc_table[6][(lo >> 8) & 0xFF] ^ crc_table[5][(lo >> 16) & 0xFF] ^
              crc_table[4][lo >> 24] ^ crc_table[3][hi & 0xFF] ^ crc_table[2][(hi >> 8) & 0xFF] ^
              crc_table[1][(hi >> 16) & 0xFF] ^ crc_table[0][hi >> 24];
        p += 8;
        len -= 8;
    }
    while (len--)
        crc = (crc >> 8) ^ crc_table[0][(crc ^ *p++) & 0xFF];
    return ~crc;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t crc32c_hw(uint32_t crc, const void *data, size_t len)
{
    const unsigned char *p = data;
    uint64_t c = ~crc;
    while (len && ((uintptr_t)p & 7)) {
        c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
        len--;
    }
    while (len >= 3 * CRC_LANE) {
        uint64_t c1 = 0, c2 = 0;
        for (size_t i = 0; i < CRC_LANE; i += 8) {
            uint64_t a, b, d;
            memcpy(&a, p + i, 8);
            memcpy(&b, p + CRC_LANE + i, 8);
            memcpy(&d, p + 2 * CRC_LANE + i, 8);
            c = __builtin_ia32_crc32di(c, a);
            c1 = __builtin_ia32_crc32di(c1, b);
            c2 = __builtin_ia32_crc32di(c2, d);
        }
        c = gf2_mulmod((uint32_t)c, crc_lane_shift) ^ c1;
        c = gf2_mulmod((uint32_t)c, crc_lane_shift) ^ c2;
        p += 3 * CRC_LANE;
        len -= 3 * CRC_LANE;
    }
    while (len >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c = __builtin_ia32_crc32di(c, v);
        p += 8;
        len -= 8;
    }
    while (len--)
        c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
    return ~(uint32_t)c;
}
#endif

uint32_t pgd_crc32c(uint32_t crc, const void *data, size_t len)
{
    pthread_once(&crc_once, crc_init);
#if defined(__x86_64__)
    if (crc_have_hw)
        return crc32c_hw(crc, data, len);
#endif
    return pgd_crc32c_sw(crc, data, len);
}
