/* cpu_pool.c: max, average and global average pooling on the CPU. */
#include <math.h>
#include <string.h>

#include "trainer/cpu_int.h"

/* The window of output cell (oy, ox) clipped to the input: rows [*y0, *y1), columns [*x0, *x1). */
static void window(const pgd_pool_shape *sh, int oy, int ox, int *y0, int *y1, int *x0, int *x1)
{
    int ys = oy * sh->stride - sh->pad, xs = ox * sh->stride - sh->pad;
    int ye = ys + sh->size, xe = xs + sh->size;
    *y0 = ys < 0 ? 0 : ys;
    *x0 = xs < 0 ? 0 : xs;
    *y1 = ye > sh->h ? sh->h : ye;
    *x1 = xe > sh->w ? sh->w : xe;
}

/* Index (within the plane) of the first maximum of the window, scanning row by row. pgd_pool_shape_init
 * guarantees that each window holds at least one input cell. */
static int argmax(const float *plane, const pgd_pool_shape *sh, int oy, int ox)
{
    int y0, y1, x0, x1;
    window(sh, oy, ox, &y0, &y1, &x0, &x1);
    int best = y0 * sh->w + x0;
    for (int y = y0; y < y1; y++)
        for (int x = x0; x < x1; x++)
            if (plane[y * sh->w + x] > plane[best] || isnan(plane[y * sh->w + x]))
                best = y * sh->w + x; /* NaN wins, as in PyTorch, so it is not hidden */
    return best;
}

void pgd_cpu_maxpool_forward(pgd_backend *be, float *out, const float *in, const pgd_pool_shape *sh)
{
    if (be->err.code)
        return;
    size_t planes = (size_t)sh->n * sh->c, hw = (size_t)sh->h * sh->w, ohw = (size_t)sh->oh * sh->ow;
    for (size_t pl = 0; pl < planes; pl++) {
        const float *plane = in + pl * hw;
        for (int oy = 0; oy < sh->oh; oy++)
            for (int ox = 0; ox < sh->ow; ox++)
                out[pl * ohw + (size_t)oy * sh->ow + ox] = plane[argmax(plane, sh, oy, ox)];
    }
}

void pgd_cpu_maxpool_backward(pgd_backend *be, float *din, const float *dout, const float *in,
                              const pgd_pool_shape *sh)
{
    if (be->err.code)
        return;
    size_t planes = (size_t)sh->n * sh->c, hw = (size_t)sh->h * sh->w, ohw = (size_t)sh->oh * sh->ow;
    memset(din, 0, planes * hw * sizeof(float));
    for (size_t pl = 0; pl < planes; pl++) {
        const float *plane = in + pl * hw;
        for (int oy = 0; oy < sh->oh; oy++)
            for (int ox = 0; ox < sh->ow; ox++)
                din[pl * hw + argmax(plane, sh, oy, ox)] += dout[pl * ohw + (size_t)oy * sh->ow + ox];
    }
}

/* Average pooling divides by size * size: padded cells count (count_include_pad), and without ceil mode no
 * window reaches past the padding. */
void pgd_cpu_avgpool_forward(pgd_backend *be, float *out, const float *in, const pgd_pool_shape *sh)
{
    if (be->err.code)
        return;
    size_t planes = (size_t)sh->n * sh->c, hw = (size_t)sh->h * sh->w, ohw = (size_t)sh->oh * sh->ow;
    float inv = 1.0f / (float)(sh->size * sh->size);
    for (size_t pl = 0; pl < planes; pl++) {
        const float *plane = in + pl * hw;
        for (int oy = 0; oy < sh->oh; oy++)
            for (int ox = 0; ox < sh->ow; ox++) {
                int y0, y1, x0, x1;
                window(sh, oy, ox, &y0, &y1, &x0, &x1);
                float sum = 0.0f;
                for (int y = y0; y < y1; y++)
                    for (int x = x0; x < x1; x++)
                        sum += plane[y * sh->w + x];
                out[pl * ohw + (size_t)oy * sh->ow + ox] = sum * inv;
            }
    }
}

void pgd_cpu_avgpool_backward(pgd_backend *be, float *din, const float *dout, const pgd_pool_shape *sh)
{
    if (be->err.code)
        return;
    size_t planes = (size_t)sh->n * sh->c, hw = (size_t)sh->h * sh->w, ohw = (size_t)sh->oh * sh->ow;
    float inv = 1.0f / (float)(sh->size * sh->size);
    memset(din, 0, planes * hw * sizeof(float));
    for (size_t pl = 0; pl < planes; pl++) {
        float *plane = din + pl * hw;
        for (int oy = 0; oy < sh->oh; oy++)
            for (int ox = 0; ox < sh->ow; ox++) {
                int y0, y1, x0, x1;
                window(sh, oy, ox, &y0, &y1, &x0, &x1);
                float g = dout[pl * ohw + (size_t)oy * sh->ow + ox] * inv;
                for (int y = y0; y < y1; y++)
                    for (int x = x0; x < x1; x++)
                        plane[y * sh->w + x] += g;
            }
    }
}

void pgd_cpu_global_avgpool_forward(pgd_backend *be, float *out, const float *in, int n, int c, int hw)
{
    if (be->err.code)
        return;
    for (size_t pl = 0; pl < (size_t)n * c; pl++) {
        const float *x = in + pl * hw;
        double sum = 0.0;
        for (int i = 0; i < hw; i++)
            sum += x[i];
        out[pl] = (float)(sum / hw);
    }
}

void pgd_cpu_global_avgpool_backward(pgd_backend *be, float *din, const float *dout, int n, int c, int hw)
{
    if (be->err.code)
        return;
    for (size_t pl = 0; pl < (size_t)n * c; pl++) {
        float g = dout[pl] / (float)hw;
        for (int i = 0; i < hw; i++)
            din[pl * hw + i] = g;
    }
}
