/* embed.h: `pgd-trainer embed`: a model's logits or features for an NCHW float32 .npy batch. */
#ifndef PGD_EMBED_H
#define PGD_EMBED_H

/* argv[0] is "embed". Returns a PGD_EXIT_ code (docs/trainer.md). */
int pgd_embed_main(int argc, char **argv);

#endif
