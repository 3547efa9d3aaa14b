/* net_nodes.c: read access to a net's nodes: count, shapes, and the outputs of the last forward. */
#include "trainer/net_int.h"

int pgd_net_node_count(const pgd_net *net)
{
    return net->node_count;
}

void pgd_net_node_shape(const pgd_net *net, int node, int *c, int *h, int *w)
{
    const pgd_node *nd = &net->nodes[node];
    *c = nd->c, *h = nd->h, *w = nd->w;
}

const float *pgd_net_node_output(const pgd_net *net, int node)
{
    if (net->last_n < 1 || (net->forward_only && net->kept && !net->kept[node]))
        return NULL; /* a forward-only net reused its buffer for a later node */
    return net->nodes[node].y;
}
