/* net.c: a net's lifetime and accessors: new / free, shapes, named tensors, parameter buffers, zero_grad. */
#include <stdlib.h>
#include <string.h>

#include "trainer/net_int.h"

pgd_net *pgd_net_new(pgd_backend *be, pgd_err *err)
{
    if (!be) {
        pgd_fail(err, PGD_EINVAL, "net: no backend");
        return NULL;
    }
    pgd_net *net = calloc(1, sizeof *net);
    if (!net) {
        pgd_fail(err, PGD_ENOMEM, "net: out of memory");
        return NULL;
    }
    net->be = be;
    net->input = -1;
    net->conv_init = PGD_INIT_TORCH_DEFAULT;
    net->linear_init = PGD_INIT_TORCH_DEFAULT;
    return net;
}

void pgd_net_free(pgd_net **netp)
{
    if (!netp || !*netp)
        return;
    pgd_net *net = *netp;
    pgd_net_release_plan(net);
    const pgd_backend_ops *ops = net->be->ops;
    ops->free(net->be, net->params);
    ops->free(net->be, net->grads);
    ops->free(net->be, net->buffers);
    free(net->counters);
    free(net->nodes);
    free(net->tensors);
    free(net);
    *netp = NULL;
}

void pgd_net_zero_grad(pgd_net *net)
{
    if (net->grads)
        net->be->ops->zero(net->be, net->grads, net->param_count * sizeof(float));
}

void pgd_net_in_shape(const pgd_net *net, int *c, int *h, int *w)
{
    const pgd_node *nd = net->input >= 0 ? &net->nodes[net->input] : NULL;
    *c = nd ? nd->c : 0;
    *h = nd ? nd->h : 0;
    *w = nd ? nd->w : 0;
}

void pgd_net_out_shape(const pgd_net *net, int *c, int *h, int *w)
{
    const pgd_node *nd = net->node_count > 0 ? &net->nodes[net->node_count - 1] : NULL;
    *c = nd ? nd->c : 0;
    *h = nd ? nd->h : 0;
    *w = nd ? nd->w : 0;
}

size_t pgd_net_out_count(const pgd_net *net)
{
    return net->node_count > 0 ? pgd_node_count(&net->nodes[net->node_count - 1]) : 0;
}

int pgd_net_tensor_count(const pgd_net *net)
{
    return net->tensor_count;
}

const pgd_tensor_info *pgd_net_tensor(const pgd_net *net, int i)
{
    return i >= 0 && i < net->tensor_count ? &net->tensors[i] : NULL;
}

int pgd_net_find(const pgd_net *net, const char *name)
{
    for (int i = 0; i < net->tensor_count; i++)
        if (strcmp(net->tensors[i].name, name) == 0)
            return i;
    return -1;
}

size_t pgd_net_param_count(const pgd_net *net)
{
    return net->param_count;
}

size_t pgd_net_buffer_count(const pgd_net *net)
{
    return net->buffer_count;
}

float *pgd_net_params(pgd_net *net)
{
    return net->params;
}

float *pgd_net_grads(pgd_net *net)
{
    return net->grads;
}

float *pgd_net_buffers(pgd_net *net)
{
    return net->buffers;
}

int64_t *pgd_net_counters(pgd_net *net)
{
    return net->counters;
}

pgd_backend *pgd_net_backend(const pgd_net *net)
{
    return net->be;
}

size_t pgd_net_bytes(const pgd_net *net)
{
    size_t held = net->finished ? (2 * net->param_count + net->buffer_count) * sizeof(float) : 0;
    return held + net->act_bytes;
}
