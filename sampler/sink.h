/* sink.h: `pgd-sink`, a stand-in consumer of the sampler's stream: credit, validation, digests, throughput. */
#ifndef PGD_SINK_H
#define PGD_SINK_H

/* Run pgd-sink (argv[0] skipped; --connect ENDPOINT required, --help lists the others; docs/sampler.md).
 * It connects a DEALER to the sampler's consumer endpoint, grants `credit` messages, then one more per
 * BATCH taken in. Every message is validated; BATCH task ids (the schedule's message index) must grow
 * strictly, so a lost message shows as a gap and a repeated or reordered one as an order error. With --digest
 * one line per BATCH goes to stdout:
 *   seq epoch batch step flags n_images ppi crc
 * (flags in hex, crc = CRC-32C of the pixels, cells, ids and labels frames, in that order, as 8 hex digits).
 * At END a summary line starting with "# sink:" goes to stdout.
 * Returns PGD_EXIT_OK at END when every message was valid and in order, PGD_EXIT_FAIL otherwise (STOP, a
 * bad or out-of-order message, idle_ms without a message, a signal), PGD_EXIT_USAGE for bad options. */
int pgd_sink_main(int argc, char **argv);

#endif
