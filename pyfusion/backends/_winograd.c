/* CPU kernels of the "winograd" backend (pyfusion/backends/winograd.py): the deploy twin's trunk and folded head.
 *
 * Layout: images are float32 HWC (channels last). Every function is called through ctypes; arrays come from
 * numpy, C-contiguous. No BLAS: one register-blocked 6x16 kernel does all the matrix products.
 *
 *   conv1_relu      direct 3x3 convolution, C0 -> C channels, pad 1, + bias, ReLU
 *   wino_conv_relu  3x3 convolution, pad 1, + bias, ReLU (+ 2x2/2 ceil-mode max pool) by Winograd F(4x4, 3x3):
 *                   per 4x4 output tile V = B^T d B (6x6 input tile d), M_k = V_k U_k for the 36 points k
 *                   (U = G g G^T, transformed in Python), Y = A^T M A  [Lavin & Gray, CVPR 2016]
 *   conv12_pool     conv1 (computed per block of tiles, never stored) -> conv2 -> pool: the fused trunk start
 *   conv3_taps      conv3 -> the head's 1x1 tap products, per block of tiles (the conv3 map is never stored)
 *   gemm_packed     C (+)= A B with B packed in 16-column panels (the head's 512 -> K*K tap products)
 *   head_sum        score(i, j) = sigmoid(bias + sum over the K*K taps (u, v) of taps[i + u, j + v, K u + v])
 *   head_sum_linear the same sum without the sigmoid (pyfusion.net.frame_scores: one frame's pre-sigmoid score)
 *
 * Each output value is computed by one thread in a fixed order, so results do not depend on the thread count.
 *
 * Builds (setup.py). By default (x86-64) the kernels below are compiled twice from this one file (it includes
 * itself): once for x86-64-v3 (AVX2 + FMA, `#pragma GCC target`) and once for the compiler's baseline (x86-64,
 * SSE2), and the exported functions call the variant the CPU supports (__builtin_cpu_supports, chosen once). With
 * PYFUSION_SINGLE_ISA defined (setup.py: PYFUSION_MARCH=native or another -march) they are compiled once, for
 * the command line's -march, and wino_cpu_ok() says whether this CPU has the ISA extensions the build assumed.
 */
#ifndef WINO_ISA /* ============================================ first pass: shared definitions, variants, dispatch */
#include <Python.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Vectors of 8 floats (AVX) or 4 (SSE2, NEON): a variant works on VW = WINO_VW channels at a time. Any lane computes
 * the same operations in the same order whatever VW, so VW changes the speed, not the results. */
typedef float v8 __attribute__((vector_size(32)));
typedef float v8u __attribute__((vector_size(32), aligned(4)));
typedef float v4 __attribute__((vector_size(16)));
typedef float v4u __attribute__((vector_size(16), aligned(4)));
#define NB 18 /* tiles per block (a multiple of 6): fastest of 6..96 on a 2-core EPYC at 520x520 */
#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define V(name) CAT(name, WINO_ISA) /* a kernel's name in the variant being compiled */

enum { OUT_MAP = 0, OUT_POOL = 1, OUT_BLOCK = 2 };

#if defined(__x86_64__) && !defined(PYFUSION_SINGLE_ISA)
#define WINO_DISPATCH 1
#pragma GCC push_options
#pragma GCC target("arch=x86-64-v3")
#define WINO_ISA _v3
#define WINO_VW 8
#include "_winograd.c"
#undef WINO_ISA
#undef WINO_VW
#pragma GCC pop_options
#define WINO_ISA _base /* SSE2: 32-byte vectors would live in memory, so 4 lanes */
#define WINO_VW 4
#include "_winograd.c"
#undef WINO_ISA
#undef WINO_VW
#else
#define WINO_ISA _one
#if defined(__AVX__)
#define WINO_VW 8
#else
#define WINO_VW 4
#endif
#include "_winograd.c"
#undef WINO_ISA
#undef WINO_VW
#endif

#ifndef PYFUSION_MARCH_NAME
#define PYFUSION_MARCH_NAME "default"
#endif

/* ---------------------------------------------------------------------------------------------- dispatch */
/* The CPU checks are compiled for plain x86-64, whatever the command line's -march, so that they cannot fault. */
#if defined(__x86_64__)
#define BASELINE_CODE __attribute__((target("arch=x86-64")))
#else
#define BASELINE_CODE
#endif

#ifdef WINO_DISPATCH
/* 1 when this CPU (and OS) runs x86-64-v3 code: AVX, AVX2, FMA, BMI1/2, F16C, LZCNT, MOVBE. */
BASELINE_CODE static int cpu_has_v3(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
           __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2") && __builtin_cpu_supports("f16c") &&
           __builtin_cpu_supports("lzcnt") && __builtin_cpu_supports("movbe");
}

static int use_v3 = -1; /* -1: not chosen yet; 0: the x86-64 kernels; 1: the x86-64-v3 kernels */

/* Choose the kernels: level -1 the best this CPU runs, 0 x86-64, 1 x86-64-v3. Returns the level in use, or -1
 * (nothing changed) when the CPU cannot run the level asked for. Call it before the kernels, not during them. */
BASELINE_CODE int wino_select(int level)
{
    int v3 = cpu_has_v3();
    if (level < 0) level = v3;
    if (level > 1 || (level == 1 && !v3)) return -1;
    use_v3 = level;
    return level;
}
#define PICK(name) ((use_v3 < 0 ? wino_select(-1) : use_v3) ? CAT(name, _v3) : CAT(name, _base))
#else
BASELINE_CODE int wino_select(int level)
{
    return level <= 0 ? 0 : -1;
}
#define PICK(name) CAT(name, _one)
#endif

/* 1 when the kernels can run on this CPU. A dispatching build always can (its x86-64 variant needs only SSE2); a
 * single-ISA build checks the extensions its -march enabled (the ones these kernels can use). */
BASELINE_CODE int wino_cpu_ok(void)
{
#if defined(WINO_DISPATCH) || !defined(__x86_64__)
    return 1;
#else
    __builtin_cpu_init();
#ifdef __AVX__
    if (!__builtin_cpu_supports("avx")) return 0;
#endif
#ifdef __AVX2__
    if (!__builtin_cpu_supports("avx2")) return 0;
#endif
#ifdef __FMA__
    if (!__builtin_cpu_supports("fma")) return 0;
#endif
#ifdef __AVX512F__
    if (!__builtin_cpu_supports("avx512f")) return 0;
#endif
#ifdef __AVX512VL__
    if (!__builtin_cpu_supports("avx512vl")) return 0;
#endif
#ifdef __AVX512BW__
    if (!__builtin_cpu_supports("avx512bw")) return 0;
#endif
#ifdef __AVX512DQ__
    if (!__builtin_cpu_supports("avx512dq")) return 0;
#endif
#ifdef __BMI2__
    if (!__builtin_cpu_supports("bmi2")) return 0;
#endif
    return 1;
#endif
}

/* "dispatch" (x86-64-v3 | x86-64 chosen at run time) or the -march of a single-ISA build. */
BASELINE_CODE const char *wino_build(void)
{
#ifdef WINO_DISPATCH
    return "dispatch";
#else
    return PYFUSION_MARCH_NAME;
#endif
}

/* The kernels in use: "x86-64-v3", "x86-64" (dispatch) or the -march of a single-ISA build. */
BASELINE_CODE const char *wino_isa(void)
{
#ifdef WINO_DISPATCH
    return (use_v3 < 0 ? wino_select(-1) : use_v3) ? "x86-64-v3" : "x86-64";
#else
    return PYFUSION_MARCH_NAME;
#endif
}

/* ------------------------------------------------------------------------------------------ exported API */
/* C[M x N] (+)= A[M x K] . B (B packed [N/16][K][16]), any M, rows split over threads; -1: out of memory. */
int gemm_packed(int M, int N, int K, const float *A, const float *Bp, float *C, int acc, int nthreads)
{
    return PICK(gemm_packed)(M, N, K, A, Bp, C, acc, nthreads);
}

/* out[H][W][C] = relu(conv1(img[H][W][C0])), C a multiple of 8. */
void conv1_relu(const float *img, int H, int W, int C0, const float *w, const float *b, int C, float *out,
                int nthreads)
{
    PICK(conv1_relu)(img, H, W, C0, w, b, C, out, nthreads);
}

/* 3x3 convolution (pad 1) + bias + ReLU (+ 2x2/2 ceil-mode max pool when pool != 0) of a map, HWC in and out. */
int wino_conv_relu(const float *in, int H, int W, int Cin, int Cout, const float *U, const float *bias, int pool,
                   float *out, int nthreads)
{
    return PICK(wino_core)(in, NULL, 0, NULL, NULL, H, W, Cin, Cout, U, bias, pool ? OUT_POOL : OUT_MAP, out, NULL,
                           0, 0, nthreads);
}

/* conv1 + ReLU + conv2 + ReLU + 2x2/2 max pool of an image img[H][W][C0], without storing the conv1 map. */
int conv12_pool(const float *img, int H, int W, int C0, const float *w1, const float *b1, int C1, int C2,
                const float *U, const float *bias, float *out, int nthreads)
{
    return PICK(wino_core)(NULL, img, C0, w1, b1, H, W, C1, C2, U, bias, OUT_POOL, out, NULL, 0, 0, nthreads);
}

/* conv3 + ReLU of a map, multiplied straight into the head's tap maps taps[H][W][KK] (+= when acc != 0). */
int conv3_taps(const float *in, int H, int W, int Cin, int Cout, const float *U, const float *bias,
               const float *head, int KK, int acc, float *taps, int nthreads)
{
    return PICK(wino_core)(in, NULL, 0, NULL, NULL, H, W, Cin, Cout, U, bias, OUT_BLOCK, taps, head, KK, acc,
                           nthreads);
}

/* score[i][j] = sigmoid(bias + sum_{u,v < K} taps[(i + u) * w + j + v][u * K + v]), taps (h*w, K*K). */
void head_sum(const float *taps, int h, int w, int K, float bias, float *score, int nthreads)
{
    PICK(head_sum)(taps, h, w, K, bias, score, nthreads);
}

/* score[i][j] = bias + sum_{u,v < K} taps[(i + u) * w + j + v][u * K + v]: head_sum without the sigmoid. */
void head_sum_linear(const float *taps, int h, int w, int K, float bias, float *score, int nthreads)
{
    PICK(head_sum_linear)(taps, h, w, K, bias, score, nthreads);
}

/* An importable (empty) module, so that setuptools builds it and importlib finds the file for ctypes. */
static struct PyModuleDef moduledef = {PyModuleDef_HEAD_INIT, "_winograd", "C kernels, loaded with ctypes", -1, NULL, NULL, NULL, NULL, NULL};
BASELINE_CODE PyMODINIT_FUNC PyInit__winograd(void) { return PyModule_Create(&moduledef); }

#else /* ============================================= the kernels, compiled once per variant (names via V()) */
#define VW WINO_VW
#if WINO_VW == 8
#define VF v8
#define VFU v8u
#else
#define VF v4
#define VFU v4u
#endif
#define LD(p) (*(const VFU *)(p))
#define ST(p, v) (*(VFU *)(p) = (v))

static inline VF V(vmax)(VF a, VF b)
{
    VF r;
    for (int i = 0; i < VW; i++) r[i] = a[i] > b[i] ? a[i] : b[i];
    return r;
}

/* ------------------------------------------------------------------------------------------- matrix kernel */
/* C[6 x 16] (+)= A[6 x K] (row stride lda) . P[K x 16] (one packed panel, row stride 16); C row stride ldc.
 * 2 VW columns at a time: 12 accumulators in registers (one pass with 8 lanes, two with 4). */
static inline void V(kern6x16)(int K, const float *A, long lda, const float *P, float *C, long ldc, int acc)
{
    const float *a0 = A, *a1 = A + lda, *a2 = A + 2 * lda, *a3 = A + 3 * lda, *a4 = A + 4 * lda, *a5 = A + 5 * lda;
    for (int h = 0; h < 16; h += 2 * VW, P += 2 * VW, C += 2 * VW) {
        VF c00 = {0}, c01 = {0}, c10 = {0}, c11 = {0}, c20 = {0}, c21 = {0};
        VF c30 = {0}, c31 = {0}, c40 = {0}, c41 = {0}, c50 = {0}, c51 = {0};
        for (int k = 0; k < K; k++) {
            VF b0 = LD(P + 16 * k), b1 = LD(P + 16 * k + VW);
            float x;
            x = a0[k]; c00 += x * b0; c01 += x * b1;
            x = a1[k]; c10 += x * b0; c11 += x * b1;
            x = a2[k]; c20 += x * b0; c21 += x * b1;
            x = a3[k]; c30 += x * b0; c31 += x * b1;
            x = a4[k]; c40 += x * b0; c41 += x * b1;
            x = a5[k]; c50 += x * b0; c51 += x * b1;
        }
        if (acc) {
            c00 += LD(C); c01 += LD(C + VW); c10 += LD(C + ldc); c11 += LD(C + ldc + VW);
            c20 += LD(C + 2 * ldc); c21 += LD(C + 2 * ldc + VW); c30 += LD(C + 3 * ldc); c31 += LD(C + 3 * ldc + VW);
            c40 += LD(C + 4 * ldc); c41 += LD(C + 4 * ldc + VW); c50 += LD(C + 5 * ldc); c51 += LD(C + 5 * ldc + VW);
        }
        ST(C, c00); ST(C + VW, c01); ST(C + ldc, c10); ST(C + ldc + VW, c11);
        ST(C + 2 * ldc, c20); ST(C + 2 * ldc + VW, c21); ST(C + 3 * ldc, c30); ST(C + 3 * ldc + VW, c31);
        ST(C + 4 * ldc, c40); ST(C + 4 * ldc + VW, c41); ST(C + 5 * ldc, c50); ST(C + 5 * ldc + VW, c51);
    }
}

/* C[M x N] (+)= A[M x K] . B, B packed as [N/16][K][16]; M a multiple of 6, N of 16 (single thread). */
static void V(gemm6)(int M, int N, int K, const float *A, const float *Bp, float *C, int acc)
{
    for (int p = 0; p < N / 16; p++)
        for (int r = 0; r < M; r += 6)
            V(kern6x16)(K, A + (long)r * K, K, Bp + (long)p * K * 16, C + (long)r * N + 16 * p, N, acc);
}

/* C[M x N] (+)= A[M x K] . B (B packed), any M, rows split over threads. Returns 0, or -1 (C untouched) when the
 * zero-padded copy of the last 1..5 rows could not be allocated. */
static int V(gemm_packed)(int M, int N, int K, const float *A, const float *Bp, float *C, int acc, int nthreads)
{
    int full = M / 6 * 6, rest = M - full;
    float *a = NULL, *c = NULL;
    if (rest) { /* allocated first: a failure leaves C as it was */
        a = calloc((size_t)6 * K, sizeof(float));
        c = calloc((size_t)6 * N, sizeof(float));
        if (!a || !c) {
            free(a);
            free(c);
            return -1;
        }
    }
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (int r = 0; r < full; r += 6)
        for (int p = 0; p < N / 16; p++)
            V(kern6x16)(K, A + (long)r * K, K, Bp + (long)p * K * 16, C + (long)r * N + 16 * p, N, acc);
    if (rest) { /* the last 1..5 rows through the zero-padded copy */
        memcpy(a, A + (long)full * K, sizeof(float) * rest * K);
        memcpy(c, C + (long)full * N, sizeof(float) * rest * N);
        V(gemm6)(6, N, K, a, Bp, c, acc);
        memcpy(C + (long)full * N, c, sizeof(float) * rest * N);
        free(a);
        free(c);
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------------ conv1 */
/* o[C] = relu(b + sum over taps t, input channels ci of w[t C0 + ci][c] * img[y + dy][x + dx][ci]) (zero padding),
 * or 0 outside the image. Always inlined, so that a constant C0 (1) gives the fixed 9-tap loop. */
static inline __attribute__((always_inline)) void V(conv1_pixel)(const float *img, int H, int W, int C0,
                                                                 const float *w, const float *b, int C, int y, int x,
                                                                 float *o)
{
    VF z = {0};
    if (y < 0 || y >= H || x < 0 || x >= W) {
        for (int c = 0; c < C; c += VW) ST(o + c, z);
        return;
    }
    int n = 9 * C0;
    float px[n];
    for (int t = 0; t < 9; t++) {
        int yy = y + t / 3 - 1, xx = x + t % 3 - 1;
        const float *src = img + ((long)yy * W + xx) * C0;
        int in = yy >= 0 && yy < H && xx >= 0 && xx < W;
        for (int ci = 0; ci < C0; ci++) px[t * C0 + ci] = in ? src[ci] : 0.0f;
    }
    for (int c = 0; c < C; c += VW) {
        VF s = LD(b + c);
        for (int t = 0; t < n; t++) s += px[t] * LD(w + (long)t * C + c);
        ST(o + c, V(vmax)(s, z));
    }
}

/* conv1 of pixel (y, x), the grayscale case (C0 = 1) compiled apart. */
static inline void V(conv1_at)(const float *img, int H, int W, int C0, const float *w, const float *b, int C, int y,
                               int x, float *o)
{
    if (C0 == 1)
        V(conv1_pixel)(img, H, W, 1, w, b, C, y, x, o);
    else
        V(conv1_pixel)(img, H, W, C0, w, b, C, y, x, o);
}

/* out[H][W][C]: conv1 + ReLU of the whole image img[H][W][C0]; w [9 C0][C] (tap-major), C a multiple of 8. */
static void V(conv1_relu)(const float *img, int H, int W, int C0, const float *w, const float *b, int C, float *out,
                          int nthreads)
{
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) V(conv1_at)(img, H, W, C0, w, b, C, y, x, out + ((long)y * W + x) * C);
}

/* ---------------------------------------------------------------------------------------------- Winograd */
/* V[36][NB][Cin] for tile t of the block, from the 6x6 input window at (y0, x0) (zero outside the image). */
static void V(input_transform)(const float *in, int H, int W, int Cin, int y0, int x0, const float *zero,
                               float *Vt, int t)
{
    const float *p[6][6];
    for (int a = 0; a < 6; a++)
        for (int c = 0; c < 6; c++) {
            int y = y0 + a, x = x0 + c;
            p[a][c] = (y >= 0 && y < H && x >= 0 && x < W) ? in + ((long)y * W + x) * Cin : zero;
        }
    long kstride = (long)NB * Cin;
    float *v = Vt + (long)t * Cin;
    for (int ch = 0; ch < Cin; ch += VW) {
        VF r[6][6]; /* r = B^T d */
        for (int c = 0; c < 6; c++) {
            VF d0 = LD(p[0][c] + ch), d1 = LD(p[1][c] + ch), d2 = LD(p[2][c] + ch);
            VF d3 = LD(p[3][c] + ch), d4 = LD(p[4][c] + ch), d5 = LD(p[5][c] + ch);
            r[0][c] = 4.0f * d0 - 5.0f * d2 + d4;
            r[1][c] = -4.0f * d1 - 4.0f * d2 + d3 + d4;
            r[2][c] = 4.0f * d1 - 4.0f * d2 - d3 + d4;
            r[3][c] = -2.0f * d1 - d2 + 2.0f * d3 + d4;
            r[4][c] = 2.0f * d1 - d2 - 2.0f * d3 + d4;
            r[5][c] = 4.0f * d1 - 5.0f * d3 + d5;
        }
        for (int i = 0; i < 6; i++) { /* V = r B */
            VF d0 = r[i][0], d1 = r[i][1], d2 = r[i][2], d3 = r[i][3], d4 = r[i][4], d5 = r[i][5];
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

/* Y = A^T m A + bias, ReLU, for tile t of the block (output rows y0.., cols x0..), stored by `kind`:
 * OUT_MAP: out[H][W][Cout]; OUT_POOL: 2x2/2 ceil-mode max pool into out[ceil(H/2)][ceil(W/2)][Cout];
 * OUT_BLOCK: out[4][4 NB][Cout], the block's 4 output rows (columns 4t..4t+3; those past W hold finite junk). */
static void V(output_transform)(const float *M, int Cout, int t, const float *bias, int H, int W, int y0, int x0,
                                int kind, float *out)
{
    long kstride = (long)NB * Cout;
    const float *m = M + (long)t * Cout;
    int Hp = (H + 1) / 2, Wp = (W + 1) / 2;
    for (int ch = 0; ch < Cout; ch += VW) {
        VF s[4][6]; /* s = A^T m */
        for (int c = 0; c < 6; c++) {
            VF m0 = LD(m + (long)(0 + c) * kstride + ch), m1 = LD(m + (long)(6 + c) * kstride + ch);
            VF m2 = LD(m + (long)(12 + c) * kstride + ch), m3 = LD(m + (long)(18 + c) * kstride + ch);
            VF m4 = LD(m + (long)(24 + c) * kstride + ch), m5 = LD(m + (long)(30 + c) * kstride + ch);
            VF p12 = m1 + m2, n12 = m1 - m2, p34 = m3 + m4, n34 = m3 - m4;
            s[0][c] = m0 + p12 + p34;
            s[1][c] = n12 + 2.0f * n34;
            s[2][c] = p12 + 4.0f * p34;
            s[3][c] = n12 + 8.0f * n34 + m5;
        }
        VF bv = LD(bias + ch), z = {0}, y[4][4];
        for (int i = 0; i < 4; i++) {
            VF m0 = s[i][0], m1 = s[i][1], m2 = s[i][2], m3 = s[i][3], m4 = s[i][4], m5 = s[i][5];
            VF p12 = m1 + m2, n12 = m1 - m2, p34 = m3 + m4, n34 = m3 - m4;
            y[i][0] = m0 + p12 + p34 + bv;
            y[i][1] = n12 + 2.0f * n34 + bv;
            y[i][2] = p12 + 4.0f * p34 + bv;
            y[i][3] = n12 + 8.0f * n34 + m5 + bv;
            for (int j = 0; j < 4; j++) y[i][j] = V(vmax)(y[i][j], z);
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
                    VF mx = y[2 * pi][2 * pj];
                    int row2 = y0 + 2 * pi + 1 < H, col2 = x0 + 2 * pj + 1 < W;
                    if (col2) mx = V(vmax)(mx, y[2 * pi][2 * pj + 1]);
                    if (row2) mx = V(vmax)(mx, y[2 * pi + 1][2 * pj]);
                    if (row2 && col2) mx = V(vmax)(mx, y[2 * pi + 1][2 * pj + 1]);
                    ST(out + ((long)yy * Wp + xx) * Cout + ch, mx);
                }
            }
        }
    }
}

/* One 3x3 convolution (pad 1) + bias + ReLU over all 4x4 tiles of an H x W map, a block of NB tiles at a time.
 * Input: `in` [H][W][Cin], or, when `img` is given, conv1 of the image img[H][W][C0] computed per block
 * (w1 [9 C0][Cin], b1 [Cin]; the map of conv1 is never stored). Output by `kind`: OUT_MAP / OUT_POOL into `out`,
 * or OUT_BLOCK: the head's tap products taps[y][x][KK] (+)= out(y, x) . head [Cout -> KK, packed], accumulating
 * when acc != 0. U: transformed weights packed as [36][Cout/16][Cin][16]. Cin a multiple of 8, Cout and KK of 16.
 * Returns 0, or -1 when a work buffer could not be allocated (then no thread has run a block). */
static int V(wino_core)(const float *in, const float *img, int C0, const float *w1, const float *b1, int H, int W,
                        int Cin, int Cout, const float *U, const float *bias, int kind, float *out, const float *head,
                        int KK, int acc, int nthreads)
{
    int Th = (H + 3) / 4, Tw = (W + 3) / 4, nbx = (Tw + NB - 1) / NB, XW = 4 * NB + 2;
    long jobs = (long)Th * nbx;
    int failed = 0;
#pragma omp parallel num_threads(nthreads)
    {
        float *Vt = aligned_alloc(64, sizeof(float) * 36 * NB * Cin);
        float *M = aligned_alloc(64, sizeof(float) * 36 * NB * Cout);
        float *zero = calloc(Cin, sizeof(float));
        float *X = img ? aligned_alloc(64, sizeof(float) * 6 * XW * Cin) : NULL;
        float *Z = kind == OUT_BLOCK ? aligned_alloc(64, sizeof(float) * 4 * 4 * NB * Cout) : NULL;
        float *T = kind == OUT_BLOCK ? aligned_alloc(64, sizeof(float) * 4 * NB * KK) : NULL;
        if (!Vt || !M || !zero || (img && !X) || (kind == OUT_BLOCK && (!Z || !T))) {
#pragma omp atomic write
            failed = 1;
        }
        /* Every thread has allocated (or failed) before any reads the flag: all enter the work-sharing loop, or
         * none does (a thread skipping an `omp for` its team enters would not be conforming OpenMP). */
#pragma omp barrier
        int any_failed;
#pragma omp atomic read
        any_failed = failed;
        if (!any_failed) {
            memset(Vt, 0, sizeof(float) * 36 * NB * Cin);
            if (Z) memset(Z, 0, sizeof(float) * 4 * 4 * NB * Cout);
#pragma omp for schedule(dynamic, 1)
            for (long job = 0; job < jobs; job++) {
                int ti = (int)(job / nbx), j0 = (int)(job % nbx) * NB;
                int nb = Tw - j0 < NB ? Tw - j0 : NB, rows = (nb + 5) / 6 * 6;
                if (img) { /* conv1 rows 4ti-1 .. 4ti+4, columns 4j0-1 .. 4(j0+nb): the blocks' input windows */
                    int xw = 4 * nb + 2;
                    for (int r = 0; r < 6; r++)
                        for (int c = 0; c < xw; c++)
                            V(conv1_at)(img, H, W, C0, w1, b1, Cin, 4 * ti - 1 + r, 4 * j0 - 1 + c,
                                        X + ((long)r * xw + c) * Cin);
                    for (int t = 0; t < nb; t++) V(input_transform)(X, 6, xw, Cin, 0, 4 * t, zero, Vt, t);
                } else {
                    for (int t = 0; t < nb; t++)
                        V(input_transform)(in, H, W, Cin, 4 * ti - 1, 4 * (j0 + t) - 1, zero, Vt, t);
                }
                for (int k = 0; k < 36; k++)
                    V(gemm6)(rows, Cout, Cin, Vt + (long)k * NB * Cin, U + (long)k * Cin * Cout,
                             M + (long)k * NB * Cout, 0);
                for (int t = 0; t < nb; t++)
                    V(output_transform)(M, Cout, t, bias, H, W, 4 * ti, 4 * (j0 + t), kind,
                                        kind == OUT_BLOCK ? Z : out);
                if (kind == OUT_BLOCK) { /* the head's 1x1 products of the block's rows, added to the tap maps */
                    int x0 = 4 * j0, n = W - x0 < 4 * nb ? W - x0 : 4 * nb, nr = (n + 5) / 6 * 6;
                    for (int i = 0; i < 4 && 4 * ti + i < H; i++) {
                        V(gemm6)(nr, KK, Cout, Z + (long)i * 4 * NB * Cout, head, T, 0);
                        float *o = out + ((long)(4 * ti + i) * W + x0) * KK;
                        if (acc)
                            for (long q = 0; q < (long)n * KK; q++) o[q] += T[q];
                        else
                            memcpy(o, T, sizeof(float) * n * KK);
                    }
                }
            }
        }
        free(Vt);
        free(M);
        free(zero);
        free(X);
        free(Z);
        free(T);
    }
    return failed ? -1 : 0;
}

/* ------------------------------------------------------------------------------------------------- head */
/* score[i][j] = 1 / (1 + exp(-(sum_{u,v < K} taps[(i + u) * w + j + v][u * K + v] + bias))), taps (h*w, K*K). */
static void V(head_sum)(const float *taps, int h, int w, int K, float bias, float *score, int nthreads)
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
            s += bias; /* exact for a bias of 0 (and sigmoid(-0) = sigmoid(+0)) */
            score[(long)i * sw + j] = 1.0f / (1.0f + expf(-s));
        }
}

/* The same sums as head_sum, in the same order, without the sigmoid: the pre-sigmoid score. */
static void V(head_sum_linear)(const float *taps, int h, int w, int K, float bias, float *score, int nthreads)
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
            score[(long)i * sw + j] = s + bias;
        }
}

#undef VW
#undef VF
#undef VFU
#undef LD
#undef ST
#endif /* WINO_ISA */
