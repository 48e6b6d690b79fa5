/* A small CNN's conv blocks, fused: relu(maxpool2x2(conv_same(x) + bias)).
 *
 * Why: for 3 input channels the convolution library runs at a third of the machine's FLOP rate, and the
 * separate max-pool and its backward pass (which zero-fills a full-size gradient) move the largest tensor of
 * the network through memory three more times. Here each image stays in L1/L2: the padded input as planes,
 * two conv rows at a time, pooled on the spot. The backward pass computes only what a first layer needs
 * (weight and bias gradients, and the input's only for a layer whose input needs one), from the pooled gradient
 * and a 2-bit argmax per output.
 *
 * Layouts: x is NHWC (channels_last), weight is [cout][cin][k][k] (PyTorch's), out and arg are NHWC at half
 * size. arg holds 2*dy+dx of the winning pixel; ties keep the first in row-major order, as PyTorch does.
 * Images are shared among OpenMP threads. Built with -fopenmp, this library binds to the OpenMP runtime that
 * PyTorch has already loaded (same soname), so it runs on PyTorch's own thread team, at its thread count,
 * instead of competing with those threads for the cores.
 */
#include <stdlib.h>
#include <string.h>
#include <omp.h>

typedef struct { int h, w, cin, cout, k; } shape_t;

/* planes[ci][y][x] = x[n][y - p][x - p][ci], zero outside: a padded, planar copy of one image */
static void pad_planes(const float *img, float *planes, const shape_t *s) {
    int p = s->k / 2, ph = s->h + 2 * p, pw = s->w + 2 * p;
    memset(planes, 0, sizeof(float) * (size_t)s->cin * ph * pw);
    for (int y = 0; y < s->h; y++)
        for (int x = 0; x < s->w; x++)
            for (int ci = 0; ci < s->cin; ci++)
                planes[((size_t)ci * ph + y + p) * pw + x + p] = img[((size_t)y * s->w + x) * s->cin + ci];
}

typedef float v16 __attribute__((vector_size(64)));  /* 16 floats: one AVX-512 register, or two AVX ones */

static inline v16 load16(const float *p) { v16 v; memcpy(&v, p, sizeof v); return v; }

/* acc[co][x0..x0+15] for output row y, all CO output channels at once in registers: each input vector is
 * loaded once per tap and multiplied by CO broadcast weights (CO is a constant in each inlined copy). */
static inline __attribute__((always_inline)) void conv_chunk(const float *planes, const float *wt, float *acc,
                                                            int y, int x0, int co0, const shape_t *s, const int CO) {
    int p = s->k / 2, ph = s->h + 2 * p, pw = s->w + 2 * p, k = s->k, taps = s->cin * k * k;
    v16 a[8];
    for (int co = 0; co < CO; co++) a[co] = (v16){0};
    for (int ci = 0; ci < s->cin; ci++)
        for (int ky = 0; ky < k; ky++) {
            const float *src = planes + ((size_t)ci * ph + y + ky) * pw + x0;
            const float *wrow = wt + (size_t)co0 * taps + ((size_t)ci * k + ky) * k;
            for (int kx = 0; kx < k; kx++) {
                v16 v = load16(src + kx);
                for (int co = 0; co < CO; co++) a[co] += wrow[(size_t)co * taps + kx] * v;
            }
        }
    for (int co = 0; co < CO; co++) memcpy(acc + (size_t)(co0 + co) * s->w + x0, &a[co], sizeof(v16));
}

/* acc[co][x] = sum over ci, ky, kx of weight * planes, for output row y */
static void conv_row(const float *planes, const float *wt, float *acc, int y, const shape_t *s) {
    int p = s->k / 2, ph = s->h + 2 * p, pw = s->w + 2 * p, w = s->w, k = s->k;
    int x0 = 0;
    for (; x0 + 16 <= w; x0 += 16)
        for (int co0 = 0; co0 < s->cout; co0 += 8)
            switch (s->cout - co0 < 8 ? s->cout - co0 : 8) {  /* one register-blocked copy per group size */
                case 1: conv_chunk(planes, wt, acc, y, x0, co0, s, 1); break;
                case 2: conv_chunk(planes, wt, acc, y, x0, co0, s, 2); break;
                case 3: conv_chunk(planes, wt, acc, y, x0, co0, s, 3); break;
                case 4: conv_chunk(planes, wt, acc, y, x0, co0, s, 4); break;
                case 5: conv_chunk(planes, wt, acc, y, x0, co0, s, 5); break;
                case 6: conv_chunk(planes, wt, acc, y, x0, co0, s, 6); break;
                case 7: conv_chunk(planes, wt, acc, y, x0, co0, s, 7); break;
                default: conv_chunk(planes, wt, acc, y, x0, co0, s, 8); break;
            }
    if (x0 == w) return;
    for (int co = 0; co < s->cout; co++) {  /* the columns left over: plain loops */
        float *restrict a = acc + (size_t)co * w;
        for (int x = x0; x < w; x++) a[x] = 0.0f;
        for (int ci = 0; ci < s->cin; ci++)
            for (int ky = 0; ky < k; ky++)
                for (int kx = 0; kx < k; kx++) {
                    float wv = wt[(((size_t)co * s->cin + ci) * k + ky) * k + kx];
                    const float *restrict src = planes + ((size_t)ci * ph + y + ky) * pw + kx;
                    #pragma omp simd
                    for (int x = x0; x < w; x++) a[x] += wv * src[x];
                }
    }
}

static size_t planes_size(const shape_t *s) {
    int p = s->k / 2;
    return (size_t)s->cin * (s->h + 2 * p) * (s->w + 2 * p);
}

int conv_pool_relu_forward(const float *x, const float *wt, const float *bias, float *out, unsigned char *arg,
                           int n, int h, int w, int cin, int cout, int k) {
    shape_t s = {h, w, cin, cout, k};
    int ho = h / 2, wo = w / 2, failed = 0;
    #pragma omp parallel reduction(|:failed)
    {
        float *planes = malloc(sizeof(float) * planes_size(&s));
        float *acc = malloc(sizeof(float) * 2 * (size_t)cout * w);
        failed = !planes || !acc;
        float *row0 = acc, *row1 = acc + (size_t)cout * w;
        #pragma omp for schedule(static)
        for (int i = 0; i < n; i++) {
            if (failed) continue;
            pad_planes(x + (size_t)i * h * w * cin, planes, &s);
            for (int py = 0; py < ho; py++) {
                conv_row(planes, wt, row0, 2 * py, &s);
                conv_row(planes, wt, row1, 2 * py + 1, &s);
                for (int px = 0; px < wo; px++)
                    for (int co = 0; co < cout; co++) {
                        const float *r0 = row0 + (size_t)co * w + 2 * px, *r1 = row1 + (size_t)co * w + 2 * px;
                        float best = r0[0];
                        unsigned char at = 0;
                        if (r0[1] > best) { best = r0[1]; at = 1; }
                        if (r1[0] > best) { best = r1[0]; at = 2; }
                        if (r1[1] > best) { best = r1[1]; at = 3; }
                        best += bias[co];
                        size_t o = (((size_t)i * ho + py) * wo + px) * cout + co;
                        out[o] = best > 0.0f ? best : 0.0f;
                        arg[o] = at;
                    }
            }
        }
        free(planes);
        free(acc);
    }
    return failed ? -1 : 0;
}

static inline float hsum(v16 v) {
    float t = 0.0f;
    for (int i = 0; i < 16; i++) t += v[i];
    return t;
}

/* dw[co][tap] += sum over y, x of g[co][y][x] * planes[ci][y + ky][x + kx], for one tap and all CO channels:
 * each input vector is loaded once and meets CO gradient vectors, the sums staying in registers. */
static inline __attribute__((always_inline)) void grad_tap(const float *g, const float *planes, float *dw, int ci,
                                                          int ky, int kx, const shape_t *s, const int CO) {
    int p = s->k / 2, ph = s->h + 2 * p, pw = s->w + 2 * p, h = s->h, w = s->w;
    size_t taps = (size_t)s->cin * s->k * s->k, tap = ((size_t)ci * s->k + ky) * s->k + kx;
    v16 a[8];
    float tail[8] = {0};
    for (int co = 0; co < CO; co++) a[co] = (v16){0};
    for (int y = 0; y < h; y++) {
        const float *src = planes + ((size_t)ci * ph + y + ky) * pw + kx;
        int x0 = 0;
        for (; x0 + 16 <= w; x0 += 16) {
            v16 v = load16(src + x0);
            for (int co = 0; co < CO; co++) a[co] += load16(g + ((size_t)co * h + y) * w + x0) * v;
        }
        for (int x = x0; x < w; x++)
            for (int co = 0; co < CO; co++) tail[co] += g[((size_t)co * h + y) * w + x] * src[x];
    }
    for (int co = 0; co < CO; co++) dw[co * taps + tap] += hsum(a[co]) + tail[co];
}

/* For kernel width K and CO <= 4 channels: dw[co][ci][ky][kx] for all kx at once. Per row chunk, K shifted input
 * vectors and CO gradient vectors are loaded once and meet in CO*K register accumulators (at most 28). The
 * accumulators live on across images in dwv (16 lanes per tap), summed across lanes once at the end. */
static inline __attribute__((always_inline)) void grad_block(const float *g, const float *planes, float *dw, v16 *dwv,
                                                            int ci, int ky, int co0, const shape_t *s, const int CO,
                                                            const int K) {
    int p = K / 2, ph = s->h + 2 * p, pw = s->w + 2 * p, h = s->h, w = s->w;
    size_t taps = (size_t)s->cin * K * K, base = ((size_t)ci * K + ky) * K;
    v16 a[4][7];
    for (int co = 0; co < CO; co++)
        for (int kx = 0; kx < K; kx++) a[co][kx] = dwv[(size_t)(co0 + co) * taps + base + kx];
    for (int y = 0; y < h; y++) {
        const float *src = planes + ((size_t)ci * ph + y + ky) * pw;
        int x0 = 0;
        for (; x0 + 16 <= w; x0 += 16) {
            v16 v[7];
            for (int kx = 0; kx < K; kx++) v[kx] = load16(src + x0 + kx);
            for (int co = 0; co < CO; co++) {
                v16 gv = load16(g + ((size_t)(co0 + co) * h + y) * w + x0);
                for (int kx = 0; kx < K; kx++) a[co][kx] += gv * v[kx];
            }
        }
        for (int x = x0; x < w; x++)  /* columns past the last full vector */
            for (int co = 0; co < CO; co++)
                for (int kx = 0; kx < K; kx++)
                    dw[(size_t)(co0 + co) * taps + base + kx] += g[((size_t)(co0 + co) * h + y) * w + x] * src[x + kx];
    }
    for (int co = 0; co < CO; co++)
        for (int kx = 0; kx < K; kx++) dwv[(size_t)(co0 + co) * taps + base + kx] = a[co][kx];
}

#define GRAD_BLOCKS(K) \
    for (int ci = 0; ci < s->cin; ci++) \
        for (int ky = 0; ky < K; ky++) \
            for (int co0 = 0; co0 < s->cout; co0 += 4) \
                switch (s->cout - co0 < 4 ? s->cout - co0 : 4) { \
                    case 1: grad_block(g, planes, dw, dwv, ci, ky, co0, s, 1, K); break; \
                    case 2: grad_block(g, planes, dw, dwv, ci, ky, co0, s, 2, K); break; \
                    case 3: grad_block(g, planes, dw, dwv, ci, ky, co0, s, 3, K); break; \
                    default: grad_block(g, planes, dw, dwv, ci, ky, co0, s, 4, K); break; \
                }

/* the general case (any kernel size): all taps, CO <= 8 channels at a time */
static void grad_taps(const float *g, const float *planes, float *dw, const shape_t *s, int co0, int co_n) {
    for (int ci = 0; ci < s->cin; ci++)
        for (int ky = 0; ky < s->k; ky++)
            for (int kx = 0; kx < s->k; kx++) {
                const float *gc = g + (size_t)co0 * s->h * s->w;
                float *d = dw + (size_t)co0 * s->cin * s->k * s->k;
                switch (co_n) {  /* one register-blocked copy per channel count */
                    case 1: grad_tap(gc, planes, d, ci, ky, kx, s, 1); break;
                    case 2: grad_tap(gc, planes, d, ci, ky, kx, s, 2); break;
                    case 3: grad_tap(gc, planes, d, ci, ky, kx, s, 3); break;
                    case 4: grad_tap(gc, planes, d, ci, ky, kx, s, 4); break;
                    case 5: grad_tap(gc, planes, d, ci, ky, kx, s, 5); break;
                    case 6: grad_tap(gc, planes, d, ci, ky, kx, s, 6); break;
                    case 7: grad_tap(gc, planes, d, ci, ky, kx, s, 7); break;
                    default: grad_tap(gc, planes, d, ci, ky, kx, s, 8); break;
                }
            }
}

/* dw (or its lane-wise twin dwv, for k = 3 or 5) += the correlation of g with the padded input, for every tap */
static void weight_grad(const float *g, const float *planes, float *dw, v16 *dwv, const shape_t *s) {
    if (s->k == 5) { GRAD_BLOCKS(5) return; }
    if (s->k == 3) { GRAD_BLOCKS(3) return; }
    for (int co0 = 0; co0 < s->cout; co0 += 8)
        grad_taps(g, planes, dw, s, co0, s->cout - co0 < 8 ? s->cout - co0 : 8);
}

/* dx[i][y][x][ci] = sum over co, ky, kx of wt_t[ci][co][ky][kx] * g[co][y + ky - p][x + kx - p]: the input's
 * gradient is a SAME convolution of the pre-pool gradient with the weights transposed and flipped (wt_t). */
static void input_grad(const float *g, float *gpad, float *rows, const float *wt_t, float *dx, const shape_t *s) {
    shape_t t = {s->h, s->w, s->cout, s->cin, s->k};  /* roles swapped: cout gradient maps in, cin out */
    int p = s->k / 2, pw = s->w + 2 * p, ph = s->h + 2 * p;
    memset(gpad, 0, sizeof(float) * planes_size(&t));
    for (int co = 0; co < s->cout; co++)
        for (int y = 0; y < s->h; y++)
            memcpy(gpad + ((size_t)co * ph + y + p) * pw + p, g + ((size_t)co * s->h + y) * s->w, sizeof(float) * s->w);
    for (int y = 0; y < s->h; y++) {
        conv_row(gpad, wt_t, rows, y, &t);
        for (int x = 0; x < s->w; x++)
            for (int ci = 0; ci < s->cin; ci++) dx[((size_t)y * s->w + x) * s->cin + ci] = rows[(size_t)ci * s->w + x];
    }
}

/* Gradients of relu(maxpool(conv)): dw (cout*cin*k*k) and db (cout) are overwritten, and dx (NHWC) too unless it is
 * NULL (a first layer: the data needs none; wt_t is then unused). Only the pixels that won their pool window and
 * passed the ReLU carry gradient: they are scattered into a planar map g; the weight gradient is a vectorised
 * correlation of g with the padded input, the input gradient a SAME convolution of g with the flipped weights.
 * Each thread sums its images privately; the sums are added in thread order, so every run gives the same result. */
int conv_pool_relu_backward(const float *x, const float *gout, const float *out, const unsigned char *arg,
                            const float *wt_t, float *dx, float *dw, float *db,
                            int n, int h, int w, int cin, int cout, int k) {
    shape_t s = {h, w, cin, cout, k};
    shape_t t = {h, w, cout, cin, k};
    int ho = h / 2, wo = w / 2, failed = 0, teams = omp_get_max_threads();
    size_t nw = (size_t)cout * cin * k * k;
    /* one slice of sums per thread, added in thread order afterwards: the same result on every run */
    float *partial = calloc((size_t)teams * (nw + cout), sizeof(float));
    if (!partial) return -1;
    #pragma omp parallel num_threads(teams) reduction(|:failed)
    {
        float *planes = malloc(sizeof(float) * planes_size(&s));
        float *g = malloc(sizeof(float) * (size_t)cout * h * w);
        float *my_dw = partial + (size_t)omp_get_thread_num() * (nw + cout), *my_db = my_dw + nw;
        v16 *dwv = aligned_alloc(64, sizeof(v16) * nw);
        if (dwv) memset(dwv, 0, sizeof(v16) * nw);
        float *gpad = dx ? malloc(sizeof(float) * planes_size(&t)) : NULL;
        float *rows = dx ? malloc(sizeof(float) * (size_t)cin * w) : NULL;
        failed = !planes || !g || !dwv || (dx && (!gpad || !rows));
        #pragma omp for schedule(static)
        for (int i = 0; i < n; i++) {
            if (failed) continue;
            memset(g, 0, sizeof(float) * (size_t)cout * h * w);
            int any = 0;
            for (int py = 0; py < ho; py++)
                for (int px = 0; px < wo; px++)
                    for (int co = 0; co < cout; co++) {
                        size_t o = (((size_t)i * ho + py) * wo + px) * cout + co;
                        if (out[o] <= 0.0f) continue;  /* the ReLU stopped it */
                        int y = 2 * py + (arg[o] >> 1), xx = 2 * px + (arg[o] & 1);
                        g[((size_t)co * h + y) * w + xx] = gout[o];
                        my_db[co] += gout[o];
                        any = 1;
                    }
            if (dx) {
                if (any) input_grad(g, gpad, rows, wt_t, dx + (size_t)i * h * w * cin, &s);
                else memset(dx + (size_t)i * h * w * cin, 0, sizeof(float) * (size_t)h * w * cin);
            }
            if (!any) continue;
            pad_planes(x + (size_t)i * h * w * cin, planes, &s);
            weight_grad(g, planes, my_dw, dwv, &s);
        }
        if (!failed)
            for (size_t j = 0; j < nw; j++) my_dw[j] += hsum(dwv[j]);
        free(planes);
        free(g);
        free(dwv);
        free(gpad);
        free(rows);
    }
    memset(dw, 0, sizeof(float) * nw);
    memset(db, 0, sizeof(float) * cout);
    for (int tm = 0; tm < teams; tm++) {
        const float *pt = partial + (size_t)tm * (nw + cout);
        for (size_t j = 0; j < nw; j++) dw[j] += pt[j];
        for (int co = 0; co < cout; co++) db[co] += pt[nw + co];
    }
    free(partial);
    return failed ? -1 : 0;
}
