/* net_build.c: building a net node by node, naming its tensors, finishing it and initialising its weights. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/rng.h"
#include "trainer/net_int.h"

static const char *op_name(pgd_node_op op)
{
    static const char *const names[] = {"input", "conv", "bn", "relu", "maxpool", "avgpool", "global_avgpool",
                                        "linear", "dropout2d", "add"};
    return names[op];
}

/* 0 when building may go on; -1 (sticky error set) once the net is finished or failed. */
static int can_build(pgd_net *net, pgd_node_op op)
{
    if (pgd_err_is_set(&net->err))
        return -1;
    if (net->finished)
        return pgd_fail(&net->err, PGD_EINVAL, "net: %s added after pgd_net_finish", op_name(op));
    return 0;
}

static int check_input(pgd_net *net, pgd_node_op op, int x)
{
    if (x < 0 || x >= net->node_count)
        return pgd_fail(&net->err, PGD_EINVAL, "net: %s input %d is not a node (0..%d)", op_name(op), x,
                        net->node_count - 1);
    return 0;
}

/* Appends a node reading x (and y, or -1) with output shape [c, h, w]; returns its id or -1. */
static int add_node(pgd_net *net, pgd_node_op op, int x, int y, int c, int h, int w)
{
    if (net->node_count == net->node_cap) {
        int cap = net->node_cap ? 2 * net->node_cap : 64;
        pgd_node *nodes = realloc(net->nodes, (size_t)cap * sizeof *nodes);
        if (!nodes)
            return pgd_fail(&net->err, PGD_ENOMEM, "net: out of memory for %d nodes", cap);
        net->nodes = nodes;
        net->node_cap = cap;
    }
    pgd_node *nd = &net->nodes[net->node_count];
    memset(nd, 0, sizeof *nd);
    nd->op = op;
    nd->in[0] = x;
    nd->in[1] = y;
    nd->c = c;
    nd->h = h;
    nd->w = w;
    nd->tensor = -1;
    if (x >= 0)
        net->nodes[x].consumers++;
    if (y >= 0)
        net->nodes[y].consumers++;
    return net->node_count++;
}

/* Appends the tensor "<prefix>.<suffix>" of the given kind and shape; returns its index or -1. */
static int add_tensor(pgd_net *net, const char *prefix, const char *suffix, pgd_tensor_kind kind, int ndim,
                      const int64_t *shape)
{
    pgd_tensor_info t;
    memset(&t, 0, sizeof t);
    int len = prefix && prefix[0] ? snprintf(t.name, sizeof t.name, "%s.%s", prefix, suffix)
                                  : snprintf(t.name, sizeof t.name, "%s", suffix);
    if (len < 0 || (size_t)len >= sizeof t.name)
        return pgd_fail(&net->err, PGD_EINVAL, "net: tensor name %s.%s is longer than %zu bytes", prefix, suffix,
                        sizeof t.name - 1);
    if (pgd_net_find(net, t.name) >= 0)
        return pgd_fail(&net->err, PGD_EEXIST, "net: duplicate tensor name %s", t.name);
    if (net->tensor_count == net->tensor_cap) {
        int cap = net->tensor_cap ? 2 * net->tensor_cap : 64;
        pgd_tensor_info *ts = realloc(net->tensors, (size_t)cap * sizeof *ts);
        if (!ts)
            return pgd_fail(&net->err, PGD_ENOMEM, "net: out of memory for %d tensors", cap);
        net->tensors = ts;
        net->tensor_cap = cap;
    }
    t.kind = kind;
    t.ndim = ndim;
    t.count = 1;
    for (int i = 0; i < ndim; i++) {
        t.shape[i] = shape[i];
        t.count *= (size_t)shape[i];
    }
    size_t *next = kind == PGD_TENSOR_PARAM ? &net->param_count
                 : kind == PGD_TENSOR_BUFFER ? &net->buffer_count : &net->counter_count;
    t.offset = *next;
    *next += t.count;
    net->tensors[net->tensor_count] = t;
    return net->tensor_count++;
}

void pgd_net_set_init(pgd_net *net, pgd_init conv, pgd_init linear)
{
    net->conv_init = conv;
    net->linear_init = linear;
}

int pgd_net_input(pgd_net *net, int c, int h, int w)
{
    if (can_build(net, PGD_OP_INPUT) < 0)
        return -1;
    if (net->input >= 0)
        return pgd_fail(&net->err, PGD_EINVAL, "net: a second input node (the first is node %d)", net->input);
    if (c < 1 || h < 1 || w < 1)
        return pgd_fail(&net->err, PGD_EINVAL, "net: input shape [%d, %d, %d] is not positive", c, h, w);
    int id = add_node(net, PGD_OP_INPUT, -1, -1, c, h, w);
    if (id >= 0)
        net->input = id;
    return id;
}

int pgd_net_conv(pgd_net *net, int x, const char *name, int out_c, int size, int stride, int pad, int groups,
                 int bias)
{
    if (can_build(net, PGD_OP_CONV) < 0 || check_input(net, PGD_OP_CONV, x) < 0)
        return -1;
    const pgd_node *in = &net->nodes[x];
    pgd_conv_shape sh = {.n = 1, .c = in->c, .h = in->h, .w = in->w, .k = out_c, .r = size, .s = size,
                         .stride = stride, .pad = pad, .groups = groups};
    pgd_err e = PGD_ERR_INIT;
    if (pgd_conv_shape_init(&sh, &e) < 0)
        return pgd_fail(&net->err, PGD_EINVAL, "net: conv %s on [%d, %d, %d]: %s", name, in->c, in->h, in->w,
                        e.msg);
    int id = add_node(net, PGD_OP_CONV, x, -1, out_c, sh.oh, sh.ow);
    if (id < 0)
        return -1;
    pgd_node *nd = &net->nodes[id];
    nd->size = size;
    nd->stride = stride;
    nd->pad = pad;
    nd->groups = groups;
    nd->bias = bias != 0;
    nd->init = net->conv_init;
    int64_t wshape[4] = {out_c, sh.c / groups, size, size}, bshape[1] = {out_c};
    nd->tensor = add_tensor(net, name, "weight", PGD_TENSOR_PARAM, 4, wshape);
    if (nd->tensor < 0 || (bias && add_tensor(net, name, "bias", PGD_TENSOR_PARAM, 1, bshape) < 0))
        return -1;
    return id;
}

int pgd_net_bn(pgd_net *net, int x, const char *name)
{
    if (can_build(net, PGD_OP_BN) < 0 || check_input(net, PGD_OP_BN, x) < 0)
        return -1;
    const pgd_node *in = &net->nodes[x];
    int id = add_node(net, PGD_OP_BN, x, -1, in->c, in->h, in->w);
    if (id < 0)
        return -1;
    int64_t shape[1] = {net->nodes[id].c};
    int t = add_tensor(net, name, "weight", PGD_TENSOR_PARAM, 1, shape);
    if (t < 0 || add_tensor(net, name, "bias", PGD_TENSOR_PARAM, 1, shape) < 0 ||
        add_tensor(net, name, "running_mean", PGD_TENSOR_BUFFER, 1, shape) < 0 ||
        add_tensor(net, name, "running_var", PGD_TENSOR_BUFFER, 1, shape) < 0 ||
        add_tensor(net, name, "num_batches_tracked", PGD_TENSOR_COUNTER, 0, NULL) < 0)
        return -1;
    net->nodes[id].tensor = t;
    return id;
}

int pgd_net_relu(pgd_net *net, int x, float cap)
{
    if (can_build(net, PGD_OP_RELU) < 0 || check_input(net, PGD_OP_RELU, x) < 0)
        return -1;
    if (!(cap >= 0))
        return pgd_fail(&net->err, PGD_EINVAL, "net: relu cap %g is negative", cap);
    const pgd_node *in = &net->nodes[x];
    int id = add_node(net, PGD_OP_RELU, x, -1, in->c, in->h, in->w);
    if (id >= 0)
        net->nodes[id].cap = cap;
    return id;
}

static int add_pool(pgd_net *net, pgd_node_op op, int x, int size, int stride, int pad)
{
    if (can_build(net, op) < 0 || check_input(net, op, x) < 0)
        return -1;
    const pgd_node *in = &net->nodes[x];
    pgd_pool_shape sh = {.n = 1, .c = in->c, .h = in->h, .w = in->w, .size = size, .stride = stride, .pad = pad};
    pgd_err e = PGD_ERR_INIT;
    if (pgd_pool_shape_init(&sh, &e) < 0)
        return pgd_fail(&net->err, PGD_EINVAL, "net: %s on [%d, %d, %d]: %s", op_name(op), in->c, in->h, in->w,
                        e.msg);
    int id = add_node(net, op, x, -1, in->c, sh.oh, sh.ow);
    if (id < 0)
        return -1;
    net->nodes[id].size = size;
    net->nodes[id].stride = stride;
    net->nodes[id].pad = pad;
    return id;
}

int pgd_net_maxpool(pgd_net *net, int x, int size, int stride, int pad)
{
    return add_pool(net, PGD_OP_MAXPOOL, x, size, stride, pad);
}

int pgd_net_avgpool(pgd_net *net, int x, int size, int stride, int pad)
{
    return add_pool(net, PGD_OP_AVGPOOL, x, size, stride, pad);
}

int pgd_net_global_avgpool(pgd_net *net, int x)
{
    if (can_build(net, PGD_OP_GAP) < 0 || check_input(net, PGD_OP_GAP, x) < 0)
        return -1;
    return add_node(net, PGD_OP_GAP, x, -1, net->nodes[x].c, 1, 1);
}

int pgd_net_linear(pgd_net *net, int x, const char *name, int out, int bias)
{
    if (can_build(net, PGD_OP_LINEAR) < 0 || check_input(net, PGD_OP_LINEAR, x) < 0)
        return -1;
    size_t in_count = pgd_node_count(&net->nodes[x]);
    if (out < 1 || in_count > INT32_MAX)
        return pgd_fail(&net->err, PGD_EINVAL, "net: linear %s: %zu -> %d features", name, in_count, out);
    int id = add_node(net, PGD_OP_LINEAR, x, -1, out, 1, 1);
    if (id < 0)
        return -1;
    pgd_node *nd = &net->nodes[id];
    nd->bias = bias != 0;
    nd->init = net->linear_init;
    int64_t wshape[2] = {out, (int64_t)in_count}, bshape[1] = {out};
    nd->tensor = add_tensor(net, name, "weight", PGD_TENSOR_PARAM, 2, wshape);
    if (nd->tensor < 0 || (bias && add_tensor(net, name, "bias", PGD_TENSOR_PARAM, 1, bshape) < 0))
        return -1;
    return id;
}

int pgd_net_dropout2d(pgd_net *net, int x, float p)
{
    if (can_build(net, PGD_OP_DROPOUT) < 0 || check_input(net, PGD_OP_DROPOUT, x) < 0)
        return -1;
    if (!(p >= 0 && p < 1))
        return pgd_fail(&net->err, PGD_EINVAL, "net: dropout probability %g is outside [0, 1)", p);
    const pgd_node *in = &net->nodes[x];
    int id = add_node(net, PGD_OP_DROPOUT, x, -1, in->c, in->h, in->w);
    if (id >= 0)
        net->nodes[id].p = p;
    return id;
}

int pgd_net_add(pgd_net *net, int a, int b)
{
    if (can_build(net, PGD_OP_ADD) < 0 || check_input(net, PGD_OP_ADD, a) < 0 || check_input(net, PGD_OP_ADD, b) < 0)
        return -1;
    const pgd_node *na = &net->nodes[a], *nb = &net->nodes[b];
    if (na->c != nb->c || na->h != nb->h || na->w != nb->w)
        return pgd_fail(&net->err, PGD_EINVAL, "net: add of nodes %d [%d, %d, %d] and %d [%d, %d, %d]", a, na->c,
                        na->h, na->w, b, nb->c, nb->h, nb->w);
    return add_node(net, PGD_OP_ADD, a, b, na->c, na->h, na->w);
}

/* --- finishing and initialisation -------------------------------------------------------------------- */

static float *alloc_floats(pgd_net *net, size_t count)
{
    size_t n = count ? count : 1;
    return net->be->ops->alloc(net->be, n * sizeof(float));
}

int pgd_net_finish(pgd_net *net, uint64_t seed, pgd_err *err)
{
    if (!pgd_err_is_set(&net->err) && net->finished)
        pgd_fail(&net->err, PGD_EINVAL, "net: finished twice");
    if (!pgd_err_is_set(&net->err) && net->input < 0)
        pgd_fail(&net->err, PGD_EINVAL, "net: no input node");
    if (!pgd_err_is_set(&net->err) && net->node_count < 2)
        pgd_fail(&net->err, PGD_EINVAL, "net: no layer after the input");
    if (pgd_err_is_set(&net->err)) {
        if (err && !pgd_err_is_set(err))
            *err = net->err;
        return -1;
    }
    net->params = alloc_floats(net, net->param_count);
    net->grads = alloc_floats(net, net->param_count);
    net->buffers = alloc_floats(net, net->buffer_count);
    net->counters = calloc(net->counter_count ? net->counter_count : 1, sizeof *net->counters);
    if (!net->counters)
        return pgd_fail(err, PGD_ENOMEM, "net: out of memory for %zu counters", net->counter_count);
    if (pgd_backend_error(net->be, err) < 0)
        return -1;
    net->finished = 1;
    return pgd_net_init(net, seed, err);
}

/* host[i] = N(0, std) for i < count: Marsaglia's polar method, two values per accepted pair (pgd_rng_normal
 * spends a log and a cosine per value, which dominates building the large models). */
static void fill_normal(pgd_rng *rng, float *host, size_t count, double std)
{
    for (size_t i = 0; i < count; i += 2) {
        double u, v, q;
        do {
            u = 2.0 * pgd_rng_uniform(rng) - 1.0;
            v = 2.0 * pgd_rng_uniform(rng) - 1.0;
            q = u * u + v * v;
        } while (q >= 1.0 || q == 0.0);
        double f = std * sqrt(-2.0 * log(q) / q);
        host[i] = (float)(u * f);
        if (i + 1 < count)
            host[i + 1] = (float)(v * f);
    }
}

/* Fills host[0..count) for tensor t of node nd, drawing from rng where the policy is random. */
static void init_values(const pgd_net *net, const pgd_node *nd, int t, pgd_rng *rng, float *host)
{
    const pgd_tensor_info *ti = &net->tensors[t];
    int is_weight = t == nd->tensor;
    float fill = 0;
    if (nd->op == PGD_OP_BN) {
        /* weight 1, bias 0, running_mean 0, running_var 1 */
        int k = t - nd->tensor;
        fill = k == 0 || k == 3 ? 1.0f : 0.0f;
    } else if (nd->init == PGD_INIT_TORCH_DEFAULT) {
        /* kaiming_uniform(a = sqrt 5) on the weight and U(+-1/sqrt(fan_in)) on the bias: both 1/sqrt(fan_in) */
        const pgd_tensor_info *w = &net->tensors[nd->tensor];
        double fan_in = (double)(w->count / (size_t)w->shape[0]);
        double bound = 1.0 / sqrt(fan_in);
        for (size_t i = 0; i < ti->count; i++)
            host[i] = (float)((2.0 * pgd_rng_uniform(rng) - 1.0) * bound);
        return;
    } else if (is_weight) {
        /* PyTorch's fan_out of a weight [k, c/g, r, s] or [o, i] is k r s or o (groups not counted) */
        double fan_out = ti->shape[0] * (ti->ndim == 4 ? (double)(ti->shape[2] * ti->shape[3]) : 1.0);
        fill_normal(rng, host, ti->count, nd->init == PGD_INIT_KAIMING_OUT ? sqrt(2.0 / fan_out) : 0.01);
        return;
    }
    for (size_t i = 0; i < ti->count; i++)
        host[i] = fill;
}

static int node_tensor_count(const pgd_node *nd)
{
    switch (nd->op) {
    case PGD_OP_CONV:
    case PGD_OP_LINEAR: return 1 + nd->bias;
    case PGD_OP_BN: return 5;
    default: return 0;
    }
}

int pgd_net_init(pgd_net *net, uint64_t seed, pgd_err *err)
{
    if (!net->finished)
        return pgd_fail(err, PGD_EINVAL, "net: init before pgd_net_finish");
    size_t largest = 1;
    for (int t = 0; t < net->tensor_count; t++)
        if (net->tensors[t].count > largest)
            largest = net->tensors[t].count;
    float *host = malloc(largest * sizeof *host);
    if (!host)
        return pgd_fail(err, PGD_ENOMEM, "net: out of memory for %zu init values", largest);
    pgd_rng root;
    pgd_rng_seed(&root, seed);
    const pgd_backend_ops *ops = net->be->ops;
    for (int i = 0; i < net->node_count; i++) {
        const pgd_node *nd = &net->nodes[i];
        for (int k = 0; k < node_tensor_count(nd); k++) {
            int t = nd->tensor + k;
            const pgd_tensor_info *ti = &net->tensors[t];
            if (ti->kind == PGD_TENSOR_COUNTER) {
                net->counters[ti->offset] = 0;
                continue;
            }
            pgd_rng rng = pgd_rng_split(&root, (uint64_t)t);
            init_values(net, nd, t, &rng, host);
            float *base = ti->kind == PGD_TENSOR_PARAM ? net->params : net->buffers;
            ops->upload(net->be, base + ti->offset, host, ti->count * sizeof(float));
        }
    }
    free(host);
    return pgd_backend_error(net->be, err);
}
