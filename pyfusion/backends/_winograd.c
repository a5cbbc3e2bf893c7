/* CPU kernels of the "winograd" backend (pyfusion/winograd.py): the deploy twin's trunk and folded head.
 *
 * Layout: images are float32 HWC (channels last). Every function is called through ctypes; arrays come from
 * numpy, C-contiguous. No BLAS: one register-blocked 6x16 kernel does all the matrix products.
 *
 *   conv1_relu      direct 3x3 convolution, 1 -> C channels, pad 1, + bias, ReLU
 *   wino_conv_relu  3x3 convolution, pad 1, + bias, ReLU (+ 2x2/2 ceil-mode max pool) by Winograd F(4x4, 3x3):
 *                   per 4x4 output tile V = B^T d B (6x6 input tile d), M_k = V_k U_k for the 36 points k
 *                   (U = G g G^T, transformed in Python), Y = A^T M A  [Lavin & Gray, CVPR 2016]
 *   conv12_pool     conv1 (computed per block of tiles, never stored) -> conv2 -> pool: the fused trunk start
 *   conv3_taps      conv3 -> the head's 1x1 tap products, per block of tiles (the conv3 map is never stored)
 *   gemm_packed     C (+)= A B with B packed in 16-column panels (the head's 512 -> 64 tap products)
 *   head_sum        score(i, j) = sigmoid(sum over the 64 taps (u, v) of taps[i + u, j + v, 8u + v])
 *
 * Each output value is computed by one thread in a fixed order, so results do not depend on the thread count.
 */
#include <Python.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef float v8 __attribute__((vector_size(32)));
typedef float v8u __attribute__((vector_size(32), aligned(4)));

#define LD(p) (*(const v8u *)(p))
#define ST(p, v) (*(v8u *)(p) = (v))

static inline v8 vmax(v8 a, v8 b)
{
    v8 r;
    for (int i = 0; i < 8; i++) r[i] = a[i] > b[i] ? a[i] : b[i];
    return r;
}

/* ------------------------------------------------------------------------------------------- matrix kernel */
/* C[6 x 16] (+)= A[6 x K] (row stride lda) . P[K x 16] (one packed panel, row stride 16); C row stride ldc. */
static inline void kern6x16(int K, const float *A, long lda, const float *P, float *C, long ldc, int acc)
{
    v8 c00 = {0}, c01 = {0}, c10 = {0}, c11 = {0}, c20 = {0}, c21 = {0};
    v8 c30 = {0}, c31 = {0}, c40 = {0}, c41 = {0}, c50 = {0}, c51 = {0};
    const float *a0 = A, *a1 = A + lda, *a2 = A + 2 * lda, *a3 = A + 3 * lda, *a4 = A + 4 * lda, *a5 = A + 5 * lda;
    for (int k = 0; k < K; k++) {
        v8 b0 = LD(P + 16 * k), b1 = LD(P + 16 * k + 8);
        float x;
        x = a0[k]; c00 += x * b0; c01 += x * b1;
        x = a1[k]; c10 += x * b0; c11 += x * b1;
        x = a2[k]; c20 += x * b0; c21 += x * b1;
        x = a3[k]; c30 += x * b0; c31 += x * b1;
        x = a4[k]; c40 += x * b0; c41 += x * b1;
        x = a5[k]; c50 += x * b0; c51 += x * b1;
    }
    if (acc) {
        c00 += LD(C); c01 += LD(C + 8); c10 += LD(C + ldc); c11 += LD(C + ldc + 8);
        c20 += LD(C + 2 * ldc); c21 += LD(C + 2 * ldc + 8); c30 += LD(C + 3 * ldc); c31 += LD(C + 3 * ldc + 8);
        c40 += LD(C + 4 * ldc); c41 += LD(C + 4 * ldc + 8); c50 += LD(C + 5 * ldc); c51 += LD(C + 5 * ldc + 8);
    }
    ST(C, c00); ST(C + 8, c01); ST(C + ldc, c10); ST(C + ldc + 8, c11);
    ST(C + 2 * ldc, c20); ST(C + 2 * ldc + 8, c21); ST(C + 3 * ldc, c30); ST(C + 3 * ldc + 8, c31);
    ST(C + 4 * ldc, c40); ST(C + 4 * ldc + 8, c41); ST(C + 5 * ldc, c50); ST(C + 5 * ldc + 8, c51);
}

/* C[M x N] (+)= A[M x K] . B, B packed as [N/16][K][16]; M a multiple of 6, N of 16 (single thread). */
static void gemm6(int M, int N, int K, const float *A, const float *Bp, float *C, int acc)
{
    for (int p = 0; p < N / 16; p++)
        for (int r = 0; r < M; r += 6)
            kern6x16(K, A + (long)r * K, K, Bp + (long)p * K * 16, C + (long)r * N + 16 * p, N, acc);
}

/* C[M x N] (+)= A[M x K] . B (B packed), any M, rows split over threads. */
void gemm_packed(int M, int N, int K, const float *A, const float *Bp, float *C, int acc, int nthreads)
{
    int full = M / 6 * 6;
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (int r = 0; r < full; r += 6)
        for (int p = 0; p < N / 16; p++)
            kern6x16(K, A + (long)r * K, K, Bp + (long)p * K * 16, C + (long)r * N + 16 * p, N, acc);
    if (full < M) { /* the last 1..5 rows through a zero-padded copy */
        int rest = M - full;
        float *a = calloc((size_t)6 * K, sizeof(float)), *c = calloc((size_t)6 * N, sizeof(float));
        memcpy(a, A + (long)full * K, sizeof(float) * rest * K);
        memcpy(c, C + (long)full * N, sizeof(float) * rest * N);
        gemm6(6, N, K, a, Bp, c, acc);
        memcpy(C + (long)full * N, c, sizeof(float) * rest * N);
        free(a);
        free(c);
    }
}

/* ------------------------------------------------------------------------------------------------ conv1 */
/* o[C] = relu(b + sum_taps w[tap][c] * img[y + dy][x + dx]) (zero padding), or 0 outside the image. */
static inline void conv1_pixel(const float *img, int H, int W, const float *w, const float *b, int C, int y, int x,
                               float *o)
{
    v8 z = {0};
    if (y < 0 || y >= H || x < 0 || x >= W) {
        for (int c = 0; c < C; c += 8) ST(o + c, z);
        return;
    }
    float px[9];
    for (int t = 0; t < 9; t++) {
        int yy = y + t / 3 - 1, xx = x + t % 3 - 1;
        px[t] = (yy >= 0 && yy < H && xx >= 0 && xx < W) ? img[(long)yy * W + xx] : 0.0f;
    }
    for (int c = 0; c < C; c += 8) {
        v8 s = LD(b + c);
        for (int t = 0; t < 9; t++) s += px[t] * LD(w + t * C + c);
        ST(o + c, vmax(s, z));
    }
}

/* out[H][W][C]: conv1 + ReLU of the whole image; C a multiple of 8. */
void conv1_relu(const float *img, int H, int W, const float *w, const float *b, int C, float *out, int nthreads)
{
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) conv1_pixel(img, H, W, w, b, C, y, x, out + ((long)y * W + x) * C);
}

/* ---------------------------------------------------------------------------------------------- Winograd */
#define NB 18 /* tiles per block (a multiple of 6): fastest of 6..96 on a 2-core EPYC at 520x520 */

/* V[36][NB][Cin] for tile t of the block, from the 6x6 input window at (y0, x0) (zero outside the image). */
static void input_transform(const float *in, int H, int W, int Cin, int y0, int x0, const float *zero,
                            float *V, int t)
{
    const float *p[6][6];
    for (int a = 0; a < 6; a++)
        for (int c = 0; c < 6; c++) {
            int y = y0 + a, x = x0 + c;
            p[a][c] = (y >= 0 && y < H && x >= 0 && x < W) ? in + ((long)y * W + x) * Cin : zero;
        }
    long kstride = (long)NB * Cin;
    float *v = V + (long)t * Cin;
    for (int ch = 0; ch < Cin; ch += 8) {
        v8 r[6][6]; /* r = B^T d */
        for (int c = 0; c < 6; c++) {
            v8 d0 = LD(p[0][c] + ch), d1 = LD(p[1][c] + ch), d2 = LD(p[2][c] + ch);
            v8 d3 = LD(p[3][c] + ch), d4 = LD(p[4][c] + ch), d5 = LD(p[5][c] + ch);
            r[0][c] = 4.0f * d0 - 5.0f * d2 + d4;
            r[1][c] = -4.0f * d1 - 4.0f * d2 + d3 + d4;
            r[2][c] = 4.0f * d1 - 4.0f * d2 - d3 + d4;
            r[3][c] = -2.0f * d1 - d2 + 2.0f * d3 + d4;
            r[4][c] = 2.0f * d1 - d2 - 2.0f * d3 + d4;
            r[5][c] = 4.0f * d1 - 5.0f * d3 + d5;
        }
        for (int i = 0; i < 6; i++) { /* V = r B */
            v8 d0 = r[i][0], d1 = r[i][1], d2 = r[i][2], d3 = r[i][3], d4 = r[i][4], d5 = r[i][5];
            float *o = v + (long)(6 * i) * kstride + ch;
            ST(o, 4.0f * d0 - 5.0f * d2 + d4);
            ST(o + kstride, -4.0f * d1 - 4.0f * d2 + d3 + d4);
            ST(o + 2 * kstride, 4.0f * d1 - 4.0f * d2 - d3 + d4);
            ST(o + 3 * kstride, -2.0f * d1 - d2 + 2.0f * d3 + d4);
            ST(o + 4 * kstride, 2.0f * d1 - d2 - 2.0f * d3 + d4);
            ST(o + 5 * kstride, 4.0f * d1 - 5.0f * d3 + d5);
        }
    }
}

enum { OUT_MAP = 0, OUT_POOL = 1, OUT_BLOCK = 2 };

/* Y = A^T m A + bias, ReLU, for tile t of the block (output rows y0.., cols x0..), stored by `kind`:
 * OUT_MAP: out[H][W][Cout]; OUT_POOL: 2x2/2 ceil-mode max pool into out[ceil(H/2)][ceil(W/2)][Cout];
 * OUT_BLOCK: out[4][4 NB][Cout], the block's 4 output rows (columns 4t..4t+3; those past W hold finite junk). */
static void output_transform(const float *M, int Cout, int t, const float *bias, int H, int W, int y0, int x0,
                             int kind, float *out)
{
    long kstride = (long)NB * Cout;
    const float *m = M + (long)t * Cout;
    int Hp = (H + 1) / 2, Wp = (W + 1) / 2;
    for (int ch = 0; ch < Cout; ch += 8) {
        v8 s[4][6]; /* s = A^T m */
        for (int c = 0; c < 6; c++) {
            v8 m0 = LD(m + (long)(0 + c) * kstride + ch), m1 = LD(m + (long)(6 + c) * kstride + ch);
            v8 m2 = LD(m + (long)(12 + c) * kstride + ch), m3 = LD(m + (long)(18 + c) * kstride + ch);
            v8 m4 = LD(m + (long)(24 + c) * kstride + ch), m5 = LD(m + (long)(30 + c) * kstride + ch);
            v8 p12 = m1 + m2, n12 = m1 - m2, p34 = m3 + m4, n34 = m3 - m4;
            s[0][c] = m0 + p12 + p34;
            s[1][c] = n12 + 2.0f * n34;
            s[2][c] = p12 + 4.0f * p34;
            s[3][c] = n12 + 8.0f * n34 + m5;
        }
        v8 bv = LD(bias + ch), z = {0}, y[4][4];
        for (int i = 0; i < 4; i++) {
            v8 m0 = s[i][0], m1 = s[i][1], m2 = s[i][2], m3 = s[i][3], m4 = s[i][4], m5 = s[i][5];
            v8 p12 = m1 + m2, n12 = m1 - m2, p34 = m3 + m4, n34 = m3 - m4;
            y[i][0] = m0 + p12 + p34 + bv;
            y[i][1] = n12 + 2.0f * n34 + bv;
            y[i][2] = p12 + 4.0f * p34 + bv;
            y[i][3] = n12 + 8.0f * n34 + m5 + bv;
            for (int j = 0; j < 4; j++) y[i][j] = vmax(y[i][j], z);
        }
        if (kind == OUT_MAP) {
            for (int i = 0; i < 4 && y0 + i < H; i++)
                for (int j = 0; j < 4 && x0 + j < W; j++) ST(out + ((long)(y0 + i) * W + x0 + j) * Cout + ch, y[i][j]);
        } else if (kind == OUT_BLOCK) {
            for (int i = 0; i < 4; i++)
                for (int j = 0; j < 4; j++) ST(out + ((long)i * 4 * NB + 4 * t + j) * Cout + ch, y[i][j]);
        } else { /* 2x2/2 max pool, ceil mode: a window is clipped to the image (values are >= 0 after ReLU) */
            for (int pi = 0; pi < 2; pi++) {
                int yy = y0 / 2 + pi;
                if (yy >= Hp) break;
                for (int pj = 0; pj < 2; pj++) {
                    int xx = x0 / 2 + pj;
                    if (xx >= Wp) break;
                    v8 mx = y[2 * pi][2 * pj];
                    int row2 = y0 + 2 * pi + 1 < H, col2 = x0 + 2 * pj + 1 < W;
                    if (col2) mx = vmax(mx, y[2 * pi][2 * pj + 1]);
                    if (row2) mx = vmax(mx, y[2 * pi + 1][2 * pj]);
                    if (row2 && col2) mx = vmax(mx, y[2 * pi + 1][2 * pj + 1]);
                    ST(out + ((long)yy * Wp + xx) * Cout + ch, mx);
                }
            }
        }
    }
}

/* One 3x3 convolution (pad 1) + bias + ReLU over all 4x4 tiles of an H x W map, a block of NB tiles at a time.
 * Input: `in` [H][W][Cin], or, when `img` is given, conv1 of the single-channel image `img` computed per block
 * (w1 [9][Cin], b1 [Cin]; the map of conv1 is never stored). Output by `kind`: OUT_MAP / OUT_POOL into `out`, or
 * OUT_BLOCK: the head's tap products taps[y][x][KK] (+)= out(y, x) . head [Cout -> KK, packed], accumulating when
 * acc != 0. U: transformed weights packed as [36][Cout/16][Cin][16]. Cin a multiple of 8, Cout and KK of 16.
 * Returns 0, or -1 when a work buffer could not be allocated. */
static int wino_core(const float *in, const float *img, const float *w1, const float *b1, int H, int W, int Cin,
                     int Cout, const float *U, const float *bias, int kind, float *out, const float *head, int KK,
                     int acc, int nthreads)
{
    int Th = (H + 3) / 4, Tw = (W + 3) / 4, nbx = (Tw + NB - 1) / NB, XW = 4 * NB + 2;
    long jobs = (long)Th * nbx;
    int failed = 0;
#pragma omp parallel num_threads(nthreads)
    {
        float *V = aligned_alloc(64, sizeof(float) * 36 * NB * Cin);
        float *M = aligned_alloc(64, sizeof(float) * 36 * NB * Cout);
        float *zero = calloc(Cin, sizeof(float));
        float *X = img ? aligned_alloc(64, sizeof(float) * 6 * XW * Cin) : NULL;
        float *Z = kind == OUT_BLOCK ? aligned_alloc(64, sizeof(float) * 4 * 4 * NB * Cout) : NULL;
        float *T = kind == OUT_BLOCK ? aligned_alloc(64, sizeof(float) * 4 * NB * KK) : NULL;
        if (!V || !M || !zero || (img && !X) || (kind == OUT_BLOCK && (!Z || !T))) {
#pragma omp atomic write
            failed = 1;
        } else {
            memset(V, 0, sizeof(float) * 36 * NB * Cin);
            if (Z) memset(Z, 0, sizeof(float) * 4 * 4 * NB * Cout);
#pragma omp for schedule(dynamic, 1)
            for (long job = 0; job < jobs; job++) {
                int ti = (int)(job / nbx), j0 = (int)(job % nbx) * NB;
                int nb = Tw - j0 < NB ? Tw - j0 : NB, rows = (nb + 5) / 6 * 6;
                if (img) { /* conv1 rows 4ti-1 .. 4ti+4, columns 4j0-1 .. 4(j0+nb): the blocks' input windows */
                    int xw = 4 * nb + 2;
                    for (int r = 0; r < 6; r++)
                        for (int c = 0; c < xw; c++)
                            conv1_pixel(img, H, W, w1, b1, Cin, 4 * ti - 1 + r, 4 * j0 - 1 + c, X + ((long)r * xw + c) * Cin);
                    for (int t = 0; t < nb; t++) input_transform(X, 6, xw, Cin, 0, 4 * t, zero, V, t);
                } else {
                    for (int t = 0; t < nb; t++) input_transform(in, H, W, Cin, 4 * ti - 1, 4 * (j0 + t) - 1, zero, V, t);
                }
                for (int k = 0; k < 36; k++)
                    gemm6(rows, Cout, Cin, V + (long)k * NB * Cin, U + (long)k * Cin * Cout, M + (long)k * NB * Cout, 0);
                for (int t = 0; t < nb; t++)
                    output_transform(M, Cout, t, bias, H, W, 4 * ti, 4 * (j0 + t), kind, kind == OUT_BLOCK ? Z : out);
                if (kind == OUT_BLOCK) { /* the head's 1x1 products of the block's rows, added to the tap maps */
                    int x0 = 4 * j0, n = W - x0 < 4 * nb ? W - x0 : 4 * nb, nr = (n + 5) / 6 * 6;
                    for (int i = 0; i < 4 && 4 * ti + i < H; i++) {
                        gemm6(nr, KK, Cout, Z + (long)i * 4 * NB * Cout, head, T, 0);
                        float *o = out + ((long)(4 * ti + i) * W + x0) * KK;
                        if (acc)
                            for (long q = 0; q < (long)n * KK; q++) o[q] += T[q];
                        else
                            memcpy(o, T, sizeof(float) * n * KK);
                    }
                }
            }
        }
        free(V);
        free(M);
        free(zero);
        free(X);
        free(Z);
        free(T);
    }
    return failed ? -1 : 0;
}

/* 3x3 convolution (pad 1) + bias + ReLU (+ 2x2/2 ceil-mode max pool when pool != 0) of a map, HWC in and out. */
int wino_conv_relu(const float *in, int H, int W, int Cin, int Cout, const float *U, const float *bias, int pool,
                   float *out, int nthreads)
{
    return wino_core(in, NULL, NULL, NULL, H, W, Cin, Cout, U, bias, pool ? OUT_POOL : OUT_MAP, out, NULL, 0, 0,
                     nthreads);
}

/* conv1 + ReLU + conv2 + ReLU + 2x2/2 max pool of a single-channel image, without storing the conv1 map. */
int conv12_pool(const float *img, int H, int W, const float *w1, const float *b1, int C1, int C2, const float *U,
                const float *bias, float *out, int nthreads)
{
    return wino_core(NULL, img, w1, b1, H, W, C1, C2, U, bias, OUT_POOL, out, NULL, 0, 0, nthreads);
}

/* conv3 + ReLU of a map, multiplied straight into the head's tap maps taps[H][W][KK] (+= when acc != 0). */
int conv3_taps(const float *in, int H, int W, int Cin, int Cout, const float *U, const float *bias,
               const float *head, int KK, int acc, float *taps, int nthreads)
{
    return wino_core(in, NULL, NULL, NULL, H, W, Cin, Cout, U, bias, OUT_BLOCK, taps, head, KK, acc, nthreads);
}

/* ------------------------------------------------------------------------------------------------- head */
/* score[i][j] = 1 / (1 + exp(-sum_{u,v < K} taps[(i + u) * w + j + v][u * K + v])), taps (h*w, K*K). */
void head_sum(const float *taps, int h, int w, int K, float *score, int nthreads)
{
    int sh = h - K + 1, sw = w - K + 1, KK = K * K;
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (int i = 0; i < sh; i++)
        for (int j = 0; j < sw; j++) {
            float s = 0.0f;
            for (int u = 0; u < K; u++) {
                const float *row = taps + ((long)(i + u) * w + j) * KK + u * K;
                for (int v = 0; v < K; v++) s += row[(long)v * KK + v];
            }
            score[(long)i * sw + j] = 1.0f / (1.0f + expf(-s));
        }
}

/* An importable (empty) module, so that setuptools builds it and importlib finds the file for ctypes. */
static struct PyModuleDef moduledef = {PyModuleDef_HEAD_INIT, "_winograd", "C kernels, loaded with ctypes", -1, NULL, NULL, NULL, NULL, NULL};
PyMODINIT_FUNC PyInit__winograd(void) { return PyModule_Create(&moduledef); }
