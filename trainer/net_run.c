/* net_run.c: running a finished net: activation planning, the forward pass and the backward pass. */
#include <stdint.h>
#include <stdlib.h>

#include "common/rng.h"
#include "trainer/net_int.h"

void pgd_net_release_plan(pgd_net *net)
{
    const pgd_backend_ops *ops = net->be->ops;
    for (int i = 0; i < net->slot_count; i++)
        ops->free(net->be, net->slots[i]);
    free(net->slots), free(net->node_slot), free(net->kept);
    net->slots = NULL, net->node_slot = NULL, net->kept = NULL;
    net->slot_count = 0;
    for (int i = 0; i < net->node_count; i++) {
        pgd_node *nd = &net->nodes[i];
        if (!nd->inplace && !net->forward_only) {
            ops->free(net->be, nd->out);
            ops->free(net->be, nd->gout);
        }
        ops->free(net->be, nd->save_mean);
        ops->free(net->be, nd->save_invstd);
        ops->free(net->be, nd->mask);
        nd->out = nd->gout = nd->save_mean = nd->save_invstd = nd->mask = NULL;
        nd->y = NULL;
        nd->inplace = 0;
    }
    ops->free(net->be, net->scratch);
    ops->free(net->be, net->bn_ones);
    ops->free(net->be, net->bn_zeros);
    net->scratch = net->bn_ones = net->bn_zeros = NULL;
    free(net->written);
    free(net->needs);
    net->written = net->needs = NULL;
    net->max_n = 0;
    net->last_n = 0;
    net->act_bytes = 0;
}

static float *alloc_act(pgd_net *net, size_t count)
{
    net->act_bytes += count * sizeof(float);
    return net->be->ops->alloc(net->be, count * sizeof(float));
}

/* A ReLU may overwrite its input's output when nothing else reads that output and the input's own backward
 * does not need it (a ReLU's does: relu_backward uses the forward output). */
static int can_run_inplace(const pgd_net *net, const pgd_node *nd)
{
    if (nd->op != PGD_OP_RELU)
        return 0;
    const pgd_node *in = &net->nodes[nd->in[0]];
    return in->op != PGD_OP_INPUT && in->op != PGD_OP_RELU && in->consumers == 1;
}

/* bn_ones and bn_zeros, [c] each (alloc zeroes). */
static int alloc_bn_constants(pgd_net *net, size_t c, pgd_err *err)
{
    float *host = malloc(c * sizeof *host);
    if (!host)
        return pgd_fail(err, PGD_ENOMEM, "net: out of memory for %zu BN constants", c);
    for (size_t i = 0; i < c; i++)
        host[i] = 1.0f;
    net->bn_ones = alloc_act(net, c);
    net->bn_zeros = alloc_act(net, c);
    if (net->bn_ones)
        net->be->ops->upload(net->be, net->bn_ones, host, c * sizeof *host);
    free(host);
    return pgd_backend_error(net->be, err);
}

/* A forward-only net's outputs share buffers ("slots") by liveness: a node's output lives until the last node
 * that reads it, or reads an alias of it (an in-place ReLU writes its input's buffer; an eval-mode dropout's
 * output is its input), and the net's output until the next forward. Walking the nodes in order, a node takes
 * the smallest free slot that holds its output (per sample), else grows the largest free one, else opens one;
 * a slot frees once its occupant's life has ended before the node that would reuse it (a node never writes
 * over what it reads). Fills slot[node] (-1: the input, an in-place node), cap[slot] (floats per sample),
 * kept[node] (when not NULL) and returns the slot count, or -1 out of memory. pgd_net_plan and pgd_net_plan_bytes share it. */
static int assign_slots(const pgd_net *net, int *slot, size_t **capp, unsigned char *kept)
{
    int nn = net->node_count, count = 0, *last = malloc((size_t)nn * sizeof *last);
    int *owner = malloc((size_t)nn * sizeof *owner), *occupant = malloc((size_t)nn * sizeof *occupant);
    size_t *cap = malloc((size_t)nn * sizeof *cap);
    if (!last || !owner || !occupant || !cap) {
        free(last), free(owner), free(occupant), free(cap);
        return -1;
    }
    for (int i = 0; i < nn; i++)
        last[i] = i == nn - 1 ? nn : i;
    for (int i = nn - 1; i >= 0; i--) { /* readers come later: last[i] is final when i is reached */
        const pgd_node *nd = &net->nodes[i];
        for (int k = 0; k < 2; k++)
            if (nd->in[k] >= 0 && last[nd->in[k]] < i)
                last[nd->in[k]] = i;
        if ((can_run_inplace(net, nd) || nd->op == PGD_OP_DROPOUT) && last[nd->in[0]] < last[i])
            last[nd->in[0]] = last[i];
    }
    for (int i = 0; i < nn; i++) {
        const pgd_node *nd = &net->nodes[i];
        int inplace = nd->op != PGD_OP_INPUT && can_run_inplace(net, nd);
        owner[i] = inplace ? owner[nd->in[0]] : i;
        slot[i] = -1;
        if (nd->op == PGD_OP_INPUT || inplace)
            continue;
        size_t need = pgd_node_count(nd);
        int best = -1, widest = -1;
        for (int s = 0; s < count; s++) {
            if (last[occupant[s]] >= i)
                continue;
            if (cap[s] >= need && (best < 0 || cap[s] < cap[best]))
                best = s;
            if (widest < 0 || cap[s] > cap[widest])
                widest = s;
        }
        if (best < 0 && widest >= 0)
            cap[best = widest] = need;
        if (best < 0)
            cap[best = count++] = need;
        occupant[best] = i;
        slot[i] = best;
    }
    for (int i = 0; kept && i < nn; i++) {
        int o = owner[i];
        kept[i] = slot[o] < 0 || occupant[slot[o]] == o; /* the input's is the caller's */
    }
    free(last), free(owner), free(occupant);
    *capp = cap;
    return count;
}

/* A forward-only net's slots for n samples, and every node's output in them (an in-place node's is its
 * input's). A failed allocation shows in the backend's sticky error. */
static int plan_slots(pgd_net *net, size_t n)
{
    size_t *cap = NULL;
    net->node_slot = malloc((size_t)net->node_count * sizeof *net->node_slot);
    net->kept = malloc((size_t)net->node_count);
    if (!net->node_slot || !net->kept)
        return -1;
    int count = assign_slots(net, net->node_slot, &cap, net->kept);
    if (count < 0 || !(net->slots = calloc((size_t)count + 1, sizeof *net->slots))) {
        free(cap);
        return -1;
    }
    net->slot_count = count;
    for (int s = 0; s < count; s++)
        net->slots[s] = alloc_act(net, n * cap[s]);
    free(cap);
    for (int i = 0; i < net->node_count; i++) {
        pgd_node *nd = &net->nodes[i];
        if (nd->op != PGD_OP_INPUT)
            nd->out = nd->inplace ? net->nodes[nd->in[0]].out : net->slots[net->node_slot[i]];
    }
    return 0;
}

int pgd_net_plan(pgd_net *net, int max_n, pgd_err *err)
{
    if (!net->finished)
        return pgd_fail(err, PGD_EINVAL, "net: plan before pgd_net_finish");
    if (max_n < 1)
        return pgd_fail(err, PGD_EINVAL, "net: plan for %d samples", max_n);
    if (max_n <= net->max_n)
        return 0;
    pgd_net_release_plan(net);
    size_t n = (size_t)max_n, largest = 1, widest_bn = 0;
    for (int i = 0; i < net->node_count; i++) {
        pgd_node *nd = &net->nodes[i];
        size_t count = n * pgd_node_count(nd);
        if (nd->op == PGD_OP_BN && (size_t)nd->c > widest_bn)
            widest_bn = (size_t)nd->c;
        if (count > largest)
            largest = count;
        if (nd->op == PGD_OP_INPUT)
            continue;
        nd->inplace = can_run_inplace(net, nd);
        if (!net->forward_only) { /* a forward-only net's outputs go in shared slots (plan_slots, below) */
            nd->out = nd->inplace ? net->nodes[nd->in[0]].out : alloc_act(net, count);
            nd->gout = nd->inplace ? net->nodes[nd->in[0]].gout : alloc_act(net, count);
        }
        if (nd->op == PGD_OP_BN) {
            nd->save_mean = alloc_act(net, (size_t)nd->c);
            nd->save_invstd = alloc_act(net, (size_t)nd->c);
        } else if (nd->op == PGD_OP_DROPOUT) {
            nd->mask = alloc_act(net, n * (size_t)nd->c);
        }
    }
    if (net->forward_only && plan_slots(net, n) != 0) {
        pgd_net_release_plan(net);
        return pgd_fail(err, PGD_ENOMEM, "net: out of memory for %d nodes", net->node_count);
    }
    if (!net->forward_only)
        net->scratch = alloc_act(net, largest);
    if (widest_bn && !net->forward_only && alloc_bn_constants(net, widest_bn, err) < 0) {
        pgd_net_release_plan(net);
        return -1;
    }
    net->written = calloc((size_t)net->node_count, 1);
    net->needs = calloc((size_t)net->node_count, 1);
    net->max_n = max_n;
    if (!net->written || !net->needs) {
        pgd_net_release_plan(net);
        return pgd_fail(err, PGD_ENOMEM, "net: out of memory for %d nodes", net->node_count);
    }
    if (pgd_backend_error(net->be, err) < 0) {
        pgd_net_release_plan(net);
        return -1;
    }
    return 0;
}

static size_t rounded(size_t (*round)(size_t), size_t count)
{
    size_t bytes = count * sizeof(float);
    return round ? round(bytes) : bytes;
}

size_t pgd_net_plan_bytes(const pgd_net *net, int n, size_t (*round)(size_t bytes))
{
    if (!net->finished || n < 1)
        return 0;
    size_t total = 0, largest = 1, widest_bn = 0;
    for (int i = 0; i < net->node_count; i++) {
        const pgd_node *nd = &net->nodes[i];
        size_t count = (size_t)n * pgd_node_count(nd);
        if (nd->op == PGD_OP_BN && (size_t)nd->c > widest_bn)
            widest_bn = (size_t)nd->c;
        if (count > largest)
            largest = count;
        if (nd->op == PGD_OP_INPUT)
            continue;
        if (!can_run_inplace(net, nd) && !net->forward_only)
            total += 2 * rounded(round, count);
        if (nd->op == PGD_OP_BN)
            total += 2 * rounded(round, (size_t)nd->c);
        else if (nd->op == PGD_OP_DROPOUT)
            total += rounded(round, (size_t)n * (size_t)nd->c);
    }
    if (!net->forward_only) {
        total += rounded(round, largest);
        if (widest_bn)
            total += 2 * rounded(round, widest_bn);
        return total;
    }
    int *slot = malloc((size_t)net->node_count * sizeof *slot);
    size_t *cap = NULL;
    int count = slot ? assign_slots(net, slot, &cap, NULL) : -1;
    for (int s = 0; s < count; s++)
        total += rounded(round, (size_t)n * cap[s]);
    free(slot), free(cap);
    return count < 0 ? SIZE_MAX : total; /* out of host memory: nothing fits */
}

size_t pgd_net_half_bytes(const pgd_net *net, int n, size_t (*round)(size_t bytes))
{
    if (!net->finished || n < 1)
        return 0;
    size_t most = 0;
    for (int i = 0; i < net->node_count; i++) {
        const pgd_node *nd = &net->nodes[i];
        if (nd->op != PGD_OP_CONV && nd->op != PGD_OP_LINEAR)
            continue;
        const pgd_node *in = &net->nodes[nd->in[0]];
        size_t per_in = pgd_node_count(in), nin = (size_t)n * per_in, nout = (size_t)n * pgd_node_count(nd);
        size_t nw = nd->op == PGD_OP_CONV ? (size_t)nd->c * (size_t)(in->c / nd->groups) * nd->size * nd->size
                                          : (size_t)nd->c * per_in;
        size_t sizes[3] = {2 * nin, 2 * nw, 2 * nout}, bytes = 0;
        for (int k = 0; k < 3; k++)
            bytes += round ? round(sizes[k]) : sizes[k];
        if (bytes > most)
            most = bytes;
    }
    return most;
}

/* --- forward ---------------------------------------------------------------------------------------------- */

static pgd_conv_shape conv_shape(const pgd_net *net, const pgd_node *nd, int n)
{
    const pgd_node *in = &net->nodes[nd->in[0]];
    pgd_conv_shape sh = {.n = n, .c = in->c, .h = in->h, .w = in->w, .k = nd->c, .r = nd->size, .s = nd->size,
                         .stride = nd->stride, .pad = nd->pad, .groups = nd->groups, .oh = nd->h, .ow = nd->w};
    return sh;
}

static pgd_pool_shape pool_shape(const pgd_net *net, const pgd_node *nd, int n)
{
    const pgd_node *in = &net->nodes[nd->in[0]];
    pgd_pool_shape sh = {.n = n, .c = in->c, .h = in->h, .w = in->w, .size = nd->size, .stride = nd->stride,
                         .pad = nd->pad, .oh = nd->h, .ow = nd->w};
    return sh;
}

static pgd_bn_shape bn_shape(const pgd_node *nd, int n)
{
    pgd_bn_shape sh = {.n = n, .c = nd->c, .hw = nd->h * nd->w, .eps = 1e-5f, .momentum = 0.1f};
    return sh;
}

static float *tensor_ptr(pgd_net *net, int t)
{
    const pgd_tensor_info *ti = &net->tensors[t];
    return (ti->kind == PGD_TENSOR_PARAM ? net->params : net->buffers) + ti->offset;
}

static float *grad_ptr(pgd_net *net, int t)
{
    return net->grads + net->tensors[t].offset;
}

/* The dropout seed of node i: a child stream of the forward's seed keyed by the node id, moved on by `skip`
 * mask elements. The backends draw element e of a mask from pgd_hash_uniform(seed, e), which hashes
 * seed + (e + 1) * 0x9E3779B97F4A7C15 (backend.h); so seed + skip * 0x9E3779B97F4A7C15 draws, for element e,
 * what seed draws for element e + skip (tests/test_net.c checks it). */
static uint64_t node_seed(uint64_t seed, int i, uint64_t skip)
{
    pgd_rng root, child;
    pgd_rng_seed(&root, seed);
    child = pgd_rng_split(&root, (uint64_t)i);
    return pgd_rng_u64(&child) + skip * 0x9E3779B97F4A7C15ull;
}

static void forward_node(pgd_net *net, int i, int n, int first, pgd_net_mode mode, uint64_t seed)
{
    pgd_backend *be = net->be;
    const pgd_backend_ops *ops = be->ops;
    pgd_node *nd = &net->nodes[i];
    const float *x = nd->in[0] >= 0 ? net->nodes[nd->in[0]].y : NULL;
    size_t count = (size_t)n * pgd_node_count(nd);
    nd->y = nd->out;
    switch (nd->op) {
    case PGD_OP_INPUT:
        break;
    case PGD_OP_CONV: {
        pgd_conv_shape sh = conv_shape(net, nd, n);
        ops->conv2d_forward(be, nd->out, x, tensor_ptr(net, nd->tensor),
                            nd->bias ? tensor_ptr(net, nd->tensor + 1) : NULL, &sh);
        break;
    }
    case PGD_OP_BN: {
        pgd_bn_shape sh = bn_shape(nd, n);
        const float *gamma = tensor_ptr(net, nd->tensor), *beta = tensor_ptr(net, nd->tensor + 1);
        float *rmean = tensor_ptr(net, nd->tensor + 2), *rvar = tensor_ptr(net, nd->tensor + 3);
        if (mode == PGD_NET_TRAIN) {
            ops->bn_forward_train(be, nd->out, nd->save_mean, nd->save_invstd, rmean, rvar, x, gamma, beta, &sh);
            net->counters[net->tensors[nd->tensor + 4].offset]++;
        } else {
            ops->bn_forward_eval(be, nd->out, x, gamma, beta, rmean, rvar, &sh);
        }
        break;
    }
    case PGD_OP_RELU:
        ops->relu_forward(be, nd->out, x, count, nd->cap);
        break;
    case PGD_OP_MAXPOOL:
    case PGD_OP_AVGPOOL: {
        pgd_pool_shape sh = pool_shape(net, nd, n);
        if (nd->op == PGD_OP_MAXPOOL)
            ops->maxpool_forward(be, nd->out, x, &sh);
        else
            ops->avgpool_forward(be, nd->out, x, &sh);
        break;
    }
    case PGD_OP_GAP: {
        const pgd_node *in = &net->nodes[nd->in[0]];
        ops->global_avgpool_forward(be, nd->out, x, n, in->c, in->h * in->w);
        break;
    }
    case PGD_OP_LINEAR: {
        int in_count = (int)pgd_node_count(&net->nodes[nd->in[0]]);
        ops->linear_forward(be, nd->out, x, tensor_ptr(net, nd->tensor),
                            nd->bias ? tensor_ptr(net, nd->tensor + 1) : NULL, n, in_count, nd->c);
        break;
    }
    case PGD_OP_DROPOUT:
        if (mode != PGD_NET_EVAL)
            ops->dropout2d_forward(be, nd->out, nd->mask, x, n, nd->c, nd->h * nd->w, nd->p,
                                   node_seed(seed, i, (uint64_t)first * (uint64_t)nd->c));
        else
            nd->y = x; /* identity: the output is the input */
        break;
    case PGD_OP_ADD:
        ops->add(be, nd->out, x, net->nodes[nd->in[1]].y, count);
        break;
    }
}

const float *pgd_net_forward(pgd_net *net, const float *in, int n, pgd_net_mode mode, uint64_t seed,
                             pgd_err *err)
{
    return pgd_net_forward_part(net, in, n, 0, mode, seed, err);
}

const float *pgd_net_forward_part(pgd_net *net, const float *in, int n, int first, pgd_net_mode mode,
                                  uint64_t seed, pgd_err *err)
{
    if (net->max_n < 1) {
        pgd_fail(err, PGD_EINVAL, "net: forward before pgd_net_plan");
        return NULL;
    }
    if (n < 1 || n > net->max_n) {
        pgd_fail(err, PGD_EINVAL, "net: forward of %d samples, planned for 1..%d", n, net->max_n);
        return NULL;
    }
    if (first < 0 || (mode != PGD_NET_TRAIN && mode != PGD_NET_EVAL && mode != PGD_NET_FROZEN_BN)) {
        pgd_fail(err, PGD_EINVAL, "net: forward from sample %d in mode %d", first, (int)mode);
        return NULL;
    }
    if (pgd_backend_error(net->be, err) < 0)
        return NULL;
    net->last_n = 0;
    for (int i = 0; i < net->node_count; i++) {
        if (i == net->input)
            net->nodes[i].y = in;
        else
            forward_node(net, i, n, first, mode, seed);
    }
    if (pgd_backend_error(net->be, err) < 0)
        return NULL;
    net->last_n = n;
    net->last_mode = mode;
    return net->nodes[net->node_count - 1].y;
}

/* --- backward ----------------------------------------------------------------------------------------------- */

/* Gradients flow from consumers to their inputs. The first contribution to node j's gradient is written in
 * place (the ops write activation gradients with =); later ones go to scratch and are added by grad_done. */
typedef struct grad_slot {
    float *dst;    /* where the op writes */
    float *target; /* node j's gradient buffer */
    int accumulate;
    size_t count;
} grad_slot;

static grad_slot grad_begin(pgd_net *net, float *din, int j, int n)
{
    grad_slot s;
    s.target = j == net->input ? din : net->nodes[j].gout;
    s.count = (size_t)n * pgd_node_count(&net->nodes[j]);
    s.accumulate = net->written[j];
    s.dst = s.accumulate ? net->scratch : s.target;
    net->written[j] = 1;
    return s;
}

static void grad_done(pgd_net *net, const grad_slot *s)
{
    if (s->accumulate)
        net->be->ops->accumulate(net->be, s->target, s->dst, s->count);
}

/* Node j's gradient gets g itself (an add, or a pass-through): copied or added, no scratch needed. */
static void grad_pass(pgd_net *net, float *din, int j, int n, const float *g)
{
    grad_slot s = grad_begin(net, din, j, n);
    if (s.accumulate)
        net->be->ops->accumulate(net->be, s.target, g, s.count);
    else
        net->be->ops->copy(net->be, s.target, g, s.count * sizeof(float));
}

/* The backward of a BN node whose forward ran on the running statistics (PGD_NET_FROZEN_BN): y = a x + b with
 * a = gamma invstd and invstd = 1 / sqrt(running_var + eps), both fixed. With xhat = (x - running_mean) invstd,
 * dgamma += sum(dy xhat) and dbeta += sum(dy): what bn_backward accumulates when it is handed the running mean
 * and invstd in place of the batch's (its input gradient, which would subtract the batch means, goes to
 * scratch); dx = a dy is bn_forward_eval applied to dy with beta and the mean 0 (the same a as the forward,
 * plus an exact 0). invstd itself is bn_forward_eval of ones with gamma 1. Only backend ops: both backends run it. */
static void bn_backward_frozen(pgd_net *net, pgd_node *nd, int n, const float *g, const float *xin, float *dx)
{
    pgd_backend *be = net->be;
    const pgd_backend_ops *ops = be->ops;
    const float *gamma = tensor_ptr(net, nd->tensor), *rmean = tensor_ptr(net, nd->tensor + 2);
    const float *rvar = tensor_ptr(net, nd->tensor + 3);
    pgd_bn_shape one = bn_shape(nd, 1);
    one.hw = 1;
    ops->bn_forward_eval(be, nd->save_invstd, net->bn_ones, net->bn_ones, net->bn_zeros, net->bn_zeros, rvar, &one);
    pgd_bn_shape sh = bn_shape(nd, n);
    ops->bn_backward(be, net->scratch, grad_ptr(net, nd->tensor), grad_ptr(net, nd->tensor + 1), g, xin, gamma,
                     rmean, nd->save_invstd, &sh);
    if (dx)
        ops->bn_forward_eval(be, dx, g, gamma, net->bn_zeros, net->bn_zeros, rvar, &sh);
}

/* Back-propagates g, node i's output gradient, into its parameters and its inputs. Only conv, BN and linear
 * nodes (with parameters) are reached with an input that needs no gradient; the others are reached only when
 * their input needs one (see mark_needs). */
static void backward_node(pgd_net *net, int i, int n, const float *g, float *din)
{
    pgd_backend *be = net->be;
    const pgd_backend_ops *ops = be->ops;
    pgd_node *nd = &net->nodes[i];
    if (nd->op == PGD_OP_ADD) {
        for (int k = 0; k < 2; k++)
            if (net->needs[nd->in[k]])
                grad_pass(net, din, nd->in[k], n, g);
        return;
    }
    int x = nd->in[0], need_x = net->needs[x];
    const pgd_node *in = &net->nodes[x];
    const float *xin = in->y;
    grad_slot s = {.dst = NULL};
    if (need_x)
        s = grad_begin(net, din, x, n);
    switch (nd->op) {
    case PGD_OP_CONV: {
        pgd_conv_shape sh = conv_shape(net, nd, n);
        ops->conv2d_backward_filter(be, grad_ptr(net, nd->tensor), nd->bias ? grad_ptr(net, nd->tensor + 1) : NULL,
                                    g, xin, &sh);
        if (need_x)
            ops->conv2d_backward_data(be, s.dst, g, tensor_ptr(net, nd->tensor), &sh);
        break;
    }
    case PGD_OP_BN: {
        pgd_bn_shape sh = bn_shape(nd, n);
        if (net->last_mode == PGD_NET_FROZEN_BN)
            bn_backward_frozen(net, nd, n, g, xin, need_x ? s.dst : NULL);
        else /* bn_backward always writes an input gradient: to scratch when nobody needs it */
            ops->bn_backward(be, need_x ? s.dst : net->scratch, grad_ptr(net, nd->tensor),
                             grad_ptr(net, nd->tensor + 1), g, xin, tensor_ptr(net, nd->tensor), nd->save_mean,
                             nd->save_invstd, &sh);
        break;
    }
    case PGD_OP_LINEAR:
        ops->linear_backward(be, s.dst, grad_ptr(net, nd->tensor), nd->bias ? grad_ptr(net, nd->tensor + 1) : NULL,
                             g, xin, tensor_ptr(net, nd->tensor), n, (int)pgd_node_count(in), nd->c);
        break;
    case PGD_OP_RELU:
        ops->relu_backward(be, s.dst, g, nd->y, s.count, nd->cap);
        break;
    case PGD_OP_MAXPOOL: {
        pgd_pool_shape sh = pool_shape(net, nd, n);
        ops->maxpool_backward(be, s.dst, g, xin, &sh);
        break;
    }
    case PGD_OP_AVGPOOL: {
        pgd_pool_shape sh = pool_shape(net, nd, n);
        ops->avgpool_backward(be, s.dst, g, &sh);
        break;
    }
    case PGD_OP_GAP:
        ops->global_avgpool_backward(be, s.dst, g, n, in->c, in->h * in->w);
        break;
    case PGD_OP_DROPOUT:
        ops->dropout2d_backward(be, s.dst, g, nd->mask, n, nd->c, nd->h * nd->w);
        break;
    case PGD_OP_INPUT: /* never reached: the walk stops before the input */
    case PGD_OP_ADD:
        break;
    }
    if (need_x)
        grad_done(net, &s);
}

/* Clears written[] and sets needs[i]: a parameter, or the input when din is wanted, lies upstream of node i,
 * so its gradient matters. */
static void mark_needs(pgd_net *net, int want_din)
{
    for (int i = 0; i < net->node_count; i++) {
        const pgd_node *nd = &net->nodes[i];
        int need = nd->op == PGD_OP_INPUT ? want_din
                 : nd->op == PGD_OP_CONV || nd->op == PGD_OP_BN || nd->op == PGD_OP_LINEAR;
        for (int k = 0; k < 2; k++)
            if (nd->in[k] >= 0 && net->needs[nd->in[k]])
                need = 1;
        net->needs[i] = (unsigned char)need;
        net->written[i] = 0;
    }
}

void pgd_net_forward_only(pgd_net *net)
{
    if (!net->forward_only)
        pgd_net_release_plan(net);
    net->forward_only = 1;
}

int pgd_net_backward(pgd_net *net, const float *dout, float *din, pgd_err *err)
{
    if (net->forward_only)
        return pgd_fail(err, PGD_EINVAL, "net: backward of a net planned for forward only (pgd_net_forward_only)");
    if (net->last_n < 1)
        return pgd_fail(err, PGD_EINVAL, "net: backward without a forward");
    if (net->last_mode == PGD_NET_EVAL)
        return pgd_fail(err, PGD_EINVAL, "net: backward after an eval-mode forward");
    if (pgd_backend_error(net->be, err) < 0)
        return -1;
    int n = net->last_n, last = net->node_count - 1;
    mark_needs(net, din != NULL);
    for (int i = last; i >= 0; i--) {
        /* a node no gradient reached (not the output, unused) contributes nothing */
        if (i == net->input || !net->needs[i] || (i != last && !net->written[i]))
            continue;
        backward_node(net, i, n, i == last ? dout : net->nodes[i].gout, din);
    }
    if (din && !net->written[net->input])
        net->be->ops->zero(net->be, din, (size_t)n * pgd_node_count(&net->nodes[net->input]) * sizeof(float));
    return pgd_backend_error(net->be, err);
}
