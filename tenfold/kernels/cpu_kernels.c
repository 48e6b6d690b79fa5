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

/* The vector width in floats, chosen at build time from the CPU's ISA (tenfold/kernels/build.py): 16 for AVX-512
 * (32 zmm registers), 8 for AVX2 (16 ymm registers), 4 elsewhere (SSE, NEON). The register blocks below are sized
 * from it: ACC accumulators at most, leaving room for the loaded inputs and a broadcast weight. */
#ifndef TENFOLD_VL
#define TENFOLD_VL 16
#endif
#define VL TENFOLD_VL
#if VL == 16
#define ACC 24       /* of 32 zmm */
#define CONV_CO 8    /* output channels per forward block: CONV_CO x 2 column vectors of accumulators */
#define GRAD_CO 4    /* output channels per dense weight-gradient block: GRAD_CO x K accumulators */
#else
#define ACC 12       /* of 16 ymm (or xmm) */
#define CONV_CO 6
#define GRAD_CO 2
#endif

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

typedef float vf __attribute__((vector_size(VL * sizeof(float))));  /* one register of VL floats */

static inline vf loadv(const float *p) { vf v; memcpy(&v, p, sizeof v); return v; }

/* CALL(n) with n a constant from 1 to 8: one register-blocked, fully unrolled copy per channel count */
#define BY_COUNT(n, CALL) \
    switch (n) { \
        case 1: CALL(1); break; case 2: CALL(2); break; case 3: CALL(3); break; case 4: CALL(4); break; \
        case 5: CALL(5); break; case 6: CALL(6); break; case 7: CALL(7); break; default: CALL(8); break; \
    }

/* acc[co][x0 .. x0 + XC*VL) for output row y, CO output channels at once in registers: each tap loads XC input
 * vectors once and meets CO broadcast weights, each broadcast feeding XC multiply-adds (CO, XC constants in each
 * inlined copy, CO * XC <= ACC). */
static inline __attribute__((always_inline)) void conv_chunk(const float *planes, const float *wt, float *acc,
                                                            int y, int x0, int co0, const shape_t *s, const int CO,
                                                            const int XC) {
    int p = s->k / 2, ph = s->h + 2 * p, pw = s->w + 2 * p, k = s->k, taps = s->cin * k * k;
    vf a[2][8];
    for (int c = 0; c < XC; c++)
        for (int co = 0; co < CO; co++) a[c][co] = (vf){0};
    for (int ci = 0; ci < s->cin; ci++)
        for (int ky = 0; ky < k; ky++) {
            const float *src = planes + ((size_t)ci * ph + y + ky) * pw + x0;
            const float *wrow = wt + (size_t)co0 * taps + ((size_t)ci * k + ky) * k;
            for (int kx = 0; kx < k; kx++) {
                vf v[2];
                for (int c = 0; c < XC; c++) v[c] = loadv(src + kx + c * VL);
                for (int co = 0; co < CO; co++) {
                    float wv = wrow[(size_t)co * taps + kx];
                    for (int c = 0; c < XC; c++) a[c][co] += wv * v[c];
                }
            }
        }
    for (int c = 0; c < XC; c++)
        for (int co = 0; co < CO; co++) memcpy(acc + (size_t)(co0 + co) * s->w + x0 + c * VL, &a[c][co], sizeof(vf));
}

/* acc[co][x] = sum over ci, ky, kx of weight * planes, for output row y */
static void conv_row(const float *planes, const float *wt, float *acc, int y, const shape_t *s) {
    int p = s->k / 2, ph = s->h + 2 * p, pw = s->w + 2 * p, w = s->w, k = s->k;
    int x0 = 0;
    for (; x0 + 2 * VL <= w; x0 += 2 * VL)
        for (int co0 = 0; co0 < s->cout; co0 += CONV_CO) {
            #define CONV_CHUNK2(CO) conv_chunk(planes, wt, acc, y, x0, co0, s, CO, 2)
            BY_COUNT(s->cout - co0 < CONV_CO ? s->cout - co0 : CONV_CO, CONV_CHUNK2)
        }
    for (; x0 + VL <= w; x0 += VL)
        for (int co0 = 0; co0 < s->cout; co0 += CONV_CO) {
            #define CONV_CHUNK1(CO) conv_chunk(planes, wt, acc, y, x0, co0, s, CO, 1)
            BY_COUNT(s->cout - co0 < CONV_CO ? s->cout - co0 : CONV_CO, CONV_CHUNK1)
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

static inline float hsum(vf v) {
    float t = 0.0f;
    for (int i = 0; i < VL; i++) t += v[i];
    return t;
}

/* dw[co][tap] += sum over y, x of g[co][y][x] * planes[ci][y + ky][x + kx], for one tap and all CO channels:
 * each input vector is loaded once and meets CO gradient vectors, the sums staying in registers. */
static inline __attribute__((always_inline)) void grad_tap(const float *g, const float *planes, float *dw, int ci,
                                                          int ky, int kx, const shape_t *s, const int CO) {
    int p = s->k / 2, ph = s->h + 2 * p, pw = s->w + 2 * p, h = s->h, w = s->w;
    size_t taps = (size_t)s->cin * s->k * s->k, tap = ((size_t)ci * s->k + ky) * s->k + kx;
    vf a[8];
    float tail[8] = {0};
    for (int co = 0; co < CO; co++) a[co] = (vf){0};
    for (int y = 0; y < h; y++) {
        const float *src = planes + ((size_t)ci * ph + y + ky) * pw + kx;
        int x0 = 0;
        for (; x0 + VL <= w; x0 += VL) {
            vf v = loadv(src + x0);
            for (int co = 0; co < CO; co++) a[co] += loadv(g + ((size_t)co * h + y) * w + x0) * v;
        }
        for (int x = x0; x < w; x++)
            for (int co = 0; co < CO; co++) tail[co] += g[((size_t)co * h + y) * w + x] * src[x];
    }
    for (int co = 0; co < CO; co++) dw[co * taps + tap] += hsum(a[co]) + tail[co];
}

/* For kernel width K and CO <= GRAD_CO channels: dw[co][ci][ky][kx] for all kx at once. Per row chunk, K shifted
 * input vectors and CO gradient vectors are loaded once and meet in CO*K register accumulators. The accumulators
 * live on across images in dwv (VL lanes per tap), summed across lanes once at the end. */
static inline __attribute__((always_inline)) void grad_block(const float *g, const float *planes, float *dw, vf *dwv,
                                                            int ci, int ky, int co0, const shape_t *s, const int CO,
                                                            const int K) {
    int p = K / 2, ph = s->h + 2 * p, pw = s->w + 2 * p, h = s->h, w = s->w;
    size_t taps = (size_t)s->cin * K * K, base = ((size_t)ci * K + ky) * K;
    vf a[GRAD_CO][7];
    for (int co = 0; co < CO; co++)
        for (int kx = 0; kx < K; kx++) a[co][kx] = dwv[(size_t)(co0 + co) * taps + base + kx];
    for (int y = 0; y < h; y++) {
        const float *src = planes + ((size_t)ci * ph + y + ky) * pw;
        int x0 = 0;
        for (; x0 + VL <= w; x0 += VL) {
            vf v[7];
            for (int kx = 0; kx < K; kx++) v[kx] = loadv(src + x0 + kx);
            for (int co = 0; co < CO; co++) {
                vf gv = loadv(g + ((size_t)(co0 + co) * h + y) * w + x0);
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
            for (int co0 = 0; co0 < s->cout; co0 += GRAD_CO) \
                switch (s->cout - co0 < GRAD_CO ? s->cout - co0 : GRAD_CO) { \
                    case 1: grad_block(g, planes, dw, dwv, ci, ky, co0, s, 1, K); break; \
                    case 2: grad_block(g, planes, dw, dwv, ci, ky, co0, s, 2, K); break; \
                    case 3: grad_block(g, planes, dw, dwv, ci, ky, co0, s, 3 < GRAD_CO ? 3 : GRAD_CO, K); break; \
                    default: grad_block(g, planes, dw, dwv, ci, ky, co0, s, GRAD_CO, K); break; \
                }

/* the general case (any kernel size): all taps, CO <= 8 channels at a time */
static void grad_taps(const float *g, const float *planes, float *dw, const shape_t *s, int co0, int co_n) {
    for (int ci = 0; ci < s->cin; ci++)
        for (int ky = 0; ky < s->k; ky++)
            for (int kx = 0; kx < s->k; kx++) {
                const float *gc = g + (size_t)co0 * s->h * s->w;
                float *d = dw + (size_t)co0 * s->cin * s->k * s->k;
                #define GRAD_TAP(CO) grad_tap(gc, planes, d, ci, ky, kx, s, CO)
                BY_COUNT(co_n, GRAD_TAP)
            }
}

/* dw (or its lane-wise twin dwv, for k = 3 or 5) += the correlation of g with the padded input, for every tap */
static void weight_grad(const float *g, const float *planes, float *dw, vf *dwv, const shape_t *s) {
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

/* ---- the sparse weight gradient: for kernel K in {3, 5} and a patch row of K * cin <= 8 * VL floats ------------
 * Only one pixel in four (the pool's winner) carries gradient, so the weight gradient is a sum over those pixels
 * alone. With the input padded in NHWC, the patch under pixel (y, x) is K rows of L = K * cin contiguous floats:
 * each row is V = ceil(L / VL) vectors, and lanes map to (kx, ci). The gradient for channel co is then K * V
 * register accumulators, each winner adding g times its patch; where K * V exceeds the registers (ACC), the rows
 * are taken KB at a time, one pass over the winners each. Lanes past L carry junk and are never read. */
static inline __attribute__((always_inline)) void sparse_wgrad(const float *xp, const float *gi, const float *oi,
                                                              const unsigned char *ai, vf *dwt, const shape_t *s,
                                                              const int K, const int V) {
    int p = K / 2, pwc = (s->w + 2 * p) * s->cin, ho = s->h / 2, wo = s->w / 2, cout = s->cout;
    const int KB = ACC / V < K ? (ACC / V > 0 ? ACC / V : 1) : K;  /* rows per pass: KB * V accumulators */
    for (int co = 0; co < cout; co++)
        for (int ky0 = 0; ky0 < K; ky0 += KB) {
            const int rows = K - ky0 < KB ? K - ky0 : KB;
            vf a[ACC];
            vf *d = dwt + ((size_t)co * K + ky0) * V;
            for (int j = 0; j < rows * V; j++) a[j] = d[j];
            for (int q = 0; q < ho * wo; q++) {
                size_t o = (size_t)q * cout + co;
                if (oi[o] <= 0.0f) continue;  /* the ReLU stopped it */
                float g = gi[o];
                int y = 2 * (q / wo) + (ai[o] >> 1), x = 2 * (q % wo) + (ai[o] & 1);
                const float *base = xp + (size_t)(y + ky0) * pwc + (size_t)x * s->cin;
                for (int ky = 0; ky < rows; ky++)
                    for (int v = 0; v < V; v++) a[ky * V + v] += g * loadv(base + (size_t)ky * pwc + VL * v);
            }
            for (int j = 0; j < rows * V; j++) d[j] = a[j];
        }
}

#define SPARSE_CASES(CALL) \
    switch (s->k * 10 + (s->k * s->cin + VL - 1) / VL) { \
        case 31: CALL(3, 1); break; case 32: CALL(3, 2); break; case 33: CALL(3, 3); break; case 34: CALL(3, 4); break; \
        case 35: CALL(3, 5); break; case 36: CALL(3, 6); break; case 37: CALL(3, 7); break; case 38: CALL(3, 8); break; \
        case 51: CALL(5, 1); break; case 52: CALL(5, 2); break; case 53: CALL(5, 3); break; case 54: CALL(5, 4); break; \
        case 55: CALL(5, 5); break; case 56: CALL(5, 6); break; case 57: CALL(5, 7); break; case 58: CALL(5, 8); break; \
    }

static int sparse_applies(const shape_t *s) { return (s->k == 3 || s->k == 5) && s->k * s->cin <= 8 * VL && s->k * s->cin <= 64; }

/* one image's weight gradient, from a padded copy of its input (NHWC, VL floats of slack) */
static void sparse_image(const float *xi, const float *gi, const float *oi, const unsigned char *ai, float *xp,
                         vf *dwt, const shape_t *s) {
    int p = s->k / 2, pw = s->w + 2 * p, ph = s->h + 2 * p, cin = s->cin;
    memset(xp, 0, sizeof(float) * ((size_t)ph * pw * cin + VL));
    for (int y = 0; y < s->h; y++)
        memcpy(xp + ((size_t)(y + p) * pw + p) * cin, xi + (size_t)y * s->w * cin, sizeof(float) * s->w * cin);
    #define WGRAD(K, V) sparse_wgrad(xp, gi, oi, ai, dwt, s, K, V)
    SPARSE_CASES(WGRAD)
}

static void input_grad(const float *g, float *gpad, float *rows, const float *wt_t, float *dx, const shape_t *s);
static size_t planes_size(const shape_t *s);

static int sparse_backward(const float *x, const float *gout, const float *out, const unsigned char *arg,
                           const float *wt_t, float *dx, float *dw, float *db, int n, const shape_t *s) {
    int k = s->k, cin = s->cin, cout = s->cout, V = (k * cin + VL - 1) / VL, teams = omp_get_max_threads(), failed = 0;
    int ho = s->h / 2, wo = s->w / 2, p = k / 2;
    size_t per = (size_t)cout * k * V, padded = (size_t)(s->h + 2 * p) * (s->w + 2 * p) * cin + VL;
    vf *dwt = aligned_alloc(sizeof(vf), sizeof(vf) * per * teams);   /* each thread's weight gradient, [co][ky][kx*cin+ci] */
    float *dbt = calloc((size_t)teams * cout, sizeof(float));
    if (!dwt || !dbt) { free(dwt); free(dbt); return -1; }
    memset(dwt, 0, sizeof(vf) * per * teams);
    #pragma omp parallel num_threads(teams) reduction(|:failed)
    {
        int me = omp_get_thread_num();
        shape_t t = {s->h, s->w, cout, cin, k};
        float *xp = malloc(sizeof(float) * padded);
        /* the input's gradient is dense work (a SAME convolution of the pre-pool gradient map g) */
        float *g = dx ? malloc(sizeof(float) * (size_t)cout * s->h * s->w) : NULL;
        float *gpad = dx ? malloc(sizeof(float) * planes_size(&t)) : NULL;
        float *rows = dx ? malloc(sizeof(float) * (size_t)cin * s->w) : NULL;
        failed = !xp || (dx && (!g || !gpad || !rows));
        #pragma omp for schedule(static)
        for (int i = 0; i < n; i++) {
            if (failed) continue;
            size_t oo = (size_t)i * ho * wo * cout;
            if (dx) memset(g, 0, sizeof(float) * (size_t)cout * s->h * s->w);
            for (size_t j = 0; j < (size_t)ho * wo * cout; j++) {
                if (out[oo + j] <= 0.0f) continue;
                int co = (int)(j % cout), q = (int)(j / cout);
                dbt[(size_t)me * cout + co] += gout[oo + j];
                if (dx) g[((size_t)co * s->h + 2 * (q / wo) + (arg[oo + j] >> 1)) * s->w
                          + 2 * (q % wo) + (arg[oo + j] & 1)] = gout[oo + j];
            }
            sparse_image(x + (size_t)i * s->h * s->w * cin, gout + oo, out + oo, arg + oo, xp, dwt + per * me, s);
            if (dx) input_grad(g, gpad, rows, wt_t, dx + (size_t)i * s->h * s->w * cin, s);
        }
        free(xp);
        free(g);
        free(gpad);
        free(rows);
    }
    memset(dw, 0, sizeof(float) * (size_t)cout * cin * k * k);
    memset(db, 0, sizeof(float) * cout);
    for (int tm = 0; tm < teams; tm++) {  /* in thread order: the same result on every run */
        const float *d = (const float *)(dwt + per * tm);
        for (int co = 0; co < cout; co++) {
            db[co] += dbt[(size_t)tm * cout + co];
            for (int ci = 0; ci < cin; ci++)
                for (int ky = 0; ky < k; ky++)
                    for (int kx = 0; kx < k; kx++)
                        dw[(((size_t)co * cin + ci) * k + ky) * k + kx] += d[((size_t)co * k + ky) * V * VL + kx * cin + ci];
        }
    }
    free(dwt);
    free(dbt);
    return failed ? -1 : 0;
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
    if (sparse_applies(&s)) return sparse_backward(x, gout, out, arg, wt_t, dx, dw, db, n, &s);
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
        vf *dwv = aligned_alloc(sizeof(vf), sizeof(vf) * nw);
        if (dwv) memset(dwv, 0, sizeof(vf) * nw);
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

/* A training batch from the resident dataset in one pass: out[i] = images[idx[i]] * scale + shift, per channel.
 * images is uint8 NHWC (N, hw, c); out is float NHWC, which seen as NCHW is channels_last. */
void gather_normalize(const unsigned char *images, const long long *idx, int b, int hw, int c,
                      const float *scale, const float *shift, float *out) {
    #pragma omp parallel for schedule(static)
    for (int i = 0; i < b; i++) {
        const unsigned char *src = images + (size_t)idx[i] * hw * c;
        float *dst = out + (size_t)i * hw * c;
        if (c == 3) {
            float s0 = scale[0], s1 = scale[1], s2 = scale[2], h0 = shift[0], h1 = shift[1], h2 = shift[2];
            for (int j = 0; j < hw; j++) {
                dst[3 * j] = src[3 * j] * s0 + h0;
                dst[3 * j + 1] = src[3 * j + 1] * s1 + h1;
                dst[3 * j + 2] = src[3 * j + 2] * s2 + h2;
            }
        } else {
            for (int j = 0; j < hw; j++)
                for (int ch = 0; ch < c; ch++) dst[(size_t)j * c + ch] = src[(size_t)j * c + ch] * scale[ch] + shift[ch];
        }
    }
}
