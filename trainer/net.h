/* net.h: a network as a list of nodes over one backend: building, named tensors, forward, backward. */
#ifndef PGD_NET_H
#define PGD_NET_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "trainer/backend.h"

/* A net is built once (nodes in topological order, each naming its inputs by node id), then finished: its
 * parameters live in ONE contiguous backend buffer carved into named tensors (torchvision's state_dict
 * names), with gradients, and the optimizer's moments, in buffers of the same layout. So the optimizer, a
 * checkpoint and a gradient all-reduce are one loop each. BN running statistics live in a second buffer
 * ("buffers"), and BN's num_batches_tracked counters in host int64s, so that a state_dict round-trips.
 *
 * Activations are allocated by pgd_net_plan() for a maximum batch; every node keeps its output (and what its
 * backward needs) until the next forward, so backward() follows forward() with the same n. */

typedef struct pgd_net pgd_net;

typedef enum pgd_tensor_kind {
    PGD_TENSOR_PARAM,   /* trained: in the params buffer (fp32), has a gradient */
    PGD_TENSOR_BUFFER,  /* BN running_mean / running_var: in the buffers buffer (fp32) */
    PGD_TENSOR_COUNTER, /* BN num_batches_tracked: one host int64, shape [] */
} pgd_tensor_kind;

typedef struct pgd_tensor_info {
    char name[128];         /* "layer1.0.conv1.weight" */
    pgd_tensor_kind kind;
    int ndim;               /* 0..4 */
    int64_t shape[4];
    size_t offset;          /* in floats into params or buffers; index into the counters for COUNTER */
    size_t count;           /* elements */
} pgd_tensor_info;

typedef enum pgd_net_mode {
    PGD_NET_TRAIN,     /* BN uses batch statistics and updates the running ones; dropout is on */
    PGD_NET_EVAL,      /* BN uses the running statistics; dropout is off */
    PGD_NET_FROZEN_BN, /* BN as in EVAL (running statistics, left unchanged, no count), dropout as in TRAIN; a
                        * backward may follow: BN is then the fixed per-channel affine map it computed, so its
                        * gamma and beta get gradients and its input gets gamma / sqrt(running_var + eps) dy.
                        * Each sample's result depends on no other sample of the batch. */
} pgd_net_mode;

/* How new conv / linear nodes initialise their weights (pgd_net_init). */
typedef enum pgd_init {
    PGD_INIT_TORCH_DEFAULT, /* PyTorch's layer default: kaiming_uniform(a=sqrt(5)): U(+-1/sqrt(fan_in)), bias too */
    PGD_INIT_KAIMING_OUT,   /* conv: N(0, sqrt(2 / fan_out)), bias 0 (torchvision ResNet and MobileNetV2) */
    PGD_INIT_NORMAL_001,    /* linear: N(0, 0.01), bias 0 (torchvision MobileNetV2's classifier) */
} pgd_init;

pgd_net *pgd_net_new(pgd_backend *be, pgd_err *err);
void pgd_net_free(pgd_net **net);

/* --- building. Each returns the new node's id (>= 0), or -1 with the net's sticky error set (a bad shape, an
 * unknown input id, a duplicate name); later calls then do nothing and pgd_net_finish reports the error.
 * `name` is the tensor-name prefix ("layer1.0.conv1" gives "layer1.0.conv1.weight"). Shapes are per sample
 * [c, h, w]; the batch size comes at plan time. --- */
void pgd_net_set_init(pgd_net *net, pgd_init conv, pgd_init linear);
int pgd_net_input(pgd_net *net, int c, int h, int w);
int pgd_net_conv(pgd_net *net, int x, const char *name, int out_c, int size, int stride, int pad, int groups,
                 int bias);
int pgd_net_bn(pgd_net *net, int x, const char *name);                 /* eps 1e-5, momentum 0.1 */
int pgd_net_relu(pgd_net *net, int x, float cap);                       /* cap 6: ReLU6; 0: plain ReLU */
int pgd_net_maxpool(pgd_net *net, int x, int size, int stride, int pad);
int pgd_net_avgpool(pgd_net *net, int x, int size, int stride, int pad);
int pgd_net_global_avgpool(pgd_net *net, int x);                        /* [c,h,w] -> [c,1,1] */
int pgd_net_linear(pgd_net *net, int x, const char *name, int out, int bias); /* input flattened: c*h*w */
int pgd_net_dropout2d(pgd_net *net, int x, float p);                    /* on [c,1,1] it is plain dropout */
int pgd_net_add(pgd_net *net, int a, int b);                            /* same shapes */

/* Ends building: the last node is the output. Allocates and zeroes params, grads and buffers, sets BN
 * weights to 1 and running_var to 1, and initialises weights from seed (pgd_net_init). */
int pgd_net_finish(pgd_net *net, uint64_t seed, pgd_err *err);
/* Re-initialise every parameter from seed, as the init policies of the nodes say. Deterministic. */
int pgd_net_init(pgd_net *net, uint64_t seed, pgd_err *err);

/* --- running --- */
/* Allocate activations for batches of up to max_n samples (again to grow; a smaller n always fits). */
int pgd_net_plan(pgd_net *net, int max_n, pgd_err *err);
/* Marks a net that will only run forward (inference, evaluation): its plans allocate no gradient buffers, and
 * its nodes' outputs share buffers by liveness (a buffer is reused once no later node reads it), so a forward
 * holds a few outputs at a time rather than all; pgd_net_backward fails, and pgd_net_node_output gives NULL
 * for a node whose buffer a later node reused. Releases a plan made before. */
void pgd_net_forward_only(pgd_net *net);
/* The backend bytes pgd_net_plan(net, n) allocates for its activations, each buffer's size passed through
 * round (the backend's allocation granularity; NULL: as requested). Computed, nothing is allocated; the net
 * must be finished (0 otherwise). The memory planner (trainer/plan.h) sizes chunks with it. */
size_t pgd_net_plan_bytes(const pgd_net *net, int n, size_t (*round)(size_t bytes));
/* The most backend bytes one conv or linear op of the net holds while it runs in bf16 or fp16 on the CUDA
 * backend: 16-bit copies of its input, weights and output (or of their gradients), each rounded by round, for
 * batches of n. Computed as pgd_net_plan_bytes is. */
size_t pgd_net_half_bytes(const pgd_net *net, int n, size_t (*round)(size_t bytes));
/* in: [n, c, h, w] in backend memory. Returns the output [n, out] (backend memory, owned by the net, valid
 * until the next forward), or NULL on failure (err set). Dropout masks come from (seed, node). */
const float *pgd_net_forward(pgd_net *net, const float *in, int n, pgd_net_mode mode, uint64_t seed,
                             pgd_err *err);
/* pgd_net_forward of samples first .. first+n-1 of a larger batch that is run in parts: dropout draws the
 * masks these samples get in ONE forward of the whole batch with the same seed (pgd_net_forward is first = 0).
 * In EVAL and FROZEN_BN modes the outputs then equal the whole batch's rows (byte for byte where the backend
 * rounds a sample alike in any batch size); in TRAIN mode batch norm still uses the statistics of the part. A
 * backward may follow as after pgd_net_forward. */
const float *pgd_net_forward_part(pgd_net *net, const float *in, int n, int first, pgd_net_mode mode,
                                  uint64_t seed, pgd_err *err);
/* Back-propagates dout [n, out] through the last forward (which must have run in PGD_NET_TRAIN or
 * PGD_NET_FROZEN_BN mode): parameter gradients ACCUMULATE into the grads buffer; din [n, c, h, w] receives the
 * input gradient when not NULL. */
int pgd_net_backward(pgd_net *net, const float *dout, float *din, pgd_err *err);
void pgd_net_zero_grad(pgd_net *net);

/* --- shape and tensors --- */
void pgd_net_in_shape(const pgd_net *net, int *c, int *h, int *w);
void pgd_net_out_shape(const pgd_net *net, int *c, int *h, int *w);
size_t pgd_net_out_count(const pgd_net *net);                           /* c*h*w of the output, per sample */
int pgd_net_tensor_count(const pgd_net *net);
const pgd_tensor_info *pgd_net_tensor(const pgd_net *net, int i);
int pgd_net_find(const pgd_net *net, const char *name);                 /* tensor index or -1 */
size_t pgd_net_param_count(const pgd_net *net);                         /* floats in params (= grads) */
size_t pgd_net_buffer_count(const pgd_net *net);
float *pgd_net_params(pgd_net *net);                                    /* backend memory */
float *pgd_net_grads(pgd_net *net);
float *pgd_net_buffers(pgd_net *net);
int64_t *pgd_net_counters(pgd_net *net);                                /* host memory */
pgd_backend *pgd_net_backend(const pgd_net *net);
/* Bytes of backend memory the net holds (params, grads, buffers, activations, scratch). */
size_t pgd_net_bytes(const pgd_net *net);

/* --- nodes (trainer/net_nodes.c): what a layer of the last forward produced, e.g. the features that enter
 * the classifier (node pgd_net_node_count() - 2 in every model of model.h) --- */
int pgd_net_node_count(const pgd_net *net);
void pgd_net_node_shape(const pgd_net *net, int node, int *c, int *h, int *w);
/* Node's output of the last forward, [n, c, h, w] in backend memory; NULL before a forward (and, in a
 * forward-only net, for a node whose buffer a later node reused; the last two nodes' outputs are kept). */
const float *pgd_net_node_output(const pgd_net *net, int node);

#endif
