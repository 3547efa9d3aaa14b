/* net_int.h: the private layout of a net (nodes, tensors, buffers), shared by net.c, net_build.c and net_run.c. */
#ifndef PGD_NET_INT_H
#define PGD_NET_INT_H

#include <stddef.h>
#include <stdint.h>

#include "trainer/net.h"

typedef enum pgd_node_op {
    PGD_OP_INPUT,
    PGD_OP_CONV,
    PGD_OP_BN,
    PGD_OP_RELU,
    PGD_OP_MAXPOOL,
    PGD_OP_AVGPOOL,
    PGD_OP_GAP,
    PGD_OP_LINEAR,
    PGD_OP_DROPOUT,
    PGD_OP_ADD,
} pgd_node_op;

/* One layer. Tensors of a node are consecutive in the net's tensor list, in state_dict order:
 * conv / linear: weight [, bias]; bn: weight, bias, running_mean, running_var, num_batches_tracked. */
typedef struct pgd_node {
    pgd_node_op op;
    int in[2];                      /* input node ids, -1 when unused */
    int c, h, w;                    /* output shape per sample */
    int size, stride, pad, groups;  /* conv and pooling windows */
    int bias;                       /* conv / linear: has a bias tensor */
    float cap;                      /* relu: 0 plain, 6 for ReLU6 */
    float p;                        /* dropout probability */
    pgd_init init;                  /* conv / linear weight policy */
    int tensor;                     /* index of the node's first tensor, -1 without tensors */
    int consumers;                  /* how many input slots of later nodes name this node */
    int inplace;                    /* relu overwriting its input's output buffer (set by plan) */
    /* Set by pgd_net_plan, sized for max_n samples. */
    float *out;                     /* [max_n, c, h, w]; the input's buffer when inplace; NULL for the input */
    float *gout;                    /* gradient of the output, same shape; shared with the input when inplace */
    float *save_mean, *save_invstd; /* bn: [c] */
    float *mask;                    /* dropout: [max_n, c] */
    const float *y;                 /* the last forward's output (out, the caller's input, or an alias) */
} pgd_node;

struct pgd_net {
    pgd_backend *be;
    pgd_err err;                    /* sticky: the first building error */
    pgd_node *nodes;
    int node_count, node_cap;
    pgd_tensor_info *tensors;
    int tensor_count, tensor_cap;
    pgd_init conv_init, linear_init; /* policies for the next conv / linear nodes */
    int input;                      /* the input node id, -1 before pgd_net_input */
    int finished;
    size_t param_count, buffer_count, counter_count;
    float *params, *grads, *buffers; /* backend memory */
    int64_t *counters;              /* host memory */
    /* Activations (pgd_net_plan). */
    int forward_only;               /* pgd_net_forward_only: outputs alone, no gradient buffers */
    int max_n;
    float **slots;                  /* forward-only: the output buffers the nodes share (pgd_net_plan) */
    int slot_count;
    int *node_slot;                 /* forward-only: node -> slot, -1 for the input and in-place nodes */
    unsigned char *kept;            /* forward-only: node's output outlives the forward (no later node reuses it) */
    float *scratch;                 /* [max_n * largest node output]: second and later gradient contributions */
    size_t act_bytes;
    float *bn_ones, *bn_zeros;      /* [widest BN]: constants of the frozen-BN backward (NULL without BN) */
    unsigned char *written;         /* per node, during backward: its gradient buffer holds a contribution */
    unsigned char *needs;           /* per node, during backward: a parameter or din lies upstream */
    /* The last forward. */
    int last_n;                     /* 0 before any forward */
    pgd_net_mode last_mode;
};

/* Frees every activation buffer pgd_net_plan allocated (max_n back to 0). */
void pgd_net_release_plan(pgd_net *net);

/* Per-sample element count of node i's output. */
static inline size_t pgd_node_count(const pgd_node *nd)
{
    return (size_t)nd->c * (size_t)nd->h * (size_t)nd->w;
}

#endif
