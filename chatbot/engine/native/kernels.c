/* Native one-token decode for the fast engine: GEMV kernels over GGUF's own quantized blocks
 * (Q4_0, Q4_1, Q8_0, Q4_K) with an int8-quantized activation (a scale per 16 values), and a
 * whole decoder step (every layer: RMSNorm, QKV, RoPE, KV write, attention, O, SiLU MLP, then the
 * final norm) in one call, so a token costs one dispatch instead of ~1300 torch ops.
 *
 * Weights stay the file's exact block bytes; the activation is quantized once per matmul. Each
 * kernel exists per instruction set (AVX-512 VNNI, AVX2, portable C), chosen at run time; rows are
 * split across OpenMP threads (the runtime torch already loaded, found by its soname).
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define QK 32

enum { T_Q4_0 = 2, T_Q4_1 = 3, T_Q8_0 = 8, T_Q4_K = 12 }; /* ggml type ids */
#define QK_K 256 /* a K-quant super-block */
enum { ISA_GENERIC = 0, ISA_AVX2 = 1, ISA_AVX512VNNI = 2 };

typedef struct {
    const uint8_t *w; /* rows x (cols / 32) blocks, row-major, the GGUF block layout */
    int32_t type, rows, cols;
} qmat;

typedef struct {
    qmat qkv, o, gate_up, down;
    const float *attn_norm, *ffn_norm;
    const float *qkv_bias;       /* Qwen2; NULL elsewhere */
    const float *q_norm, *k_norm; /* Qwen3: an RMSNorm over each head of Q and K before RoPE; NULL elsewhere */
} layer_weights;

typedef struct {
    int32_t n_layers, dim, n_heads, n_kv_heads, head_dim, hidden;
    float eps;
    const layer_weights *layers;
    const float *final_norm;
    int32_t precise; /* a bit per matrix (PRECISE_*): its input also gets its rounding error as a second int8 pass */
} model_weights;

enum { PRECISE_QKV = 1, PRECISE_O = 2, PRECISE_GATE_UP = 4, PRECISE_DOWN = 8 };

/* An activation quantized to int8 in halves of a weight block (16 values, each with its own scale:
 * measured closer to fp32 than one scale per 32, at one extra multiply per block): q, the scales
 * d[2 b], d[2 b + 1] of block b, and s[b] = the block's sum of d * q (for the weights' offsets). */
#define QH (QK / 2)
typedef struct {
    int8_t *q;
    float *d, *s;
} qvec;

static size_t row_bytes_of(int type, int cols) {
    switch (type) {
    case T_Q4_0: return (size_t)cols / QK * 18;
    case T_Q4_1: return (size_t)cols / QK * 20;
    case T_Q4_K: return (size_t)cols / QK_K * 144;
    default: return (size_t)cols / QK * 34; /* Q8_0 */
    }
}

static inline float bits_to_fp32(uint32_t bits) {
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static inline uint32_t fp32_to_bits(float f) {
    uint32_t bits;
    memcpy(&bits, &f, 4);
    return bits;
}

/* IEEE half to single, exact for every input (subnormals, infinities, NaN) and branch-free: the
 * exponent is rebiased by a multiply, subnormals come out of a magic-number subtraction. */
static inline float fp16_to_fp32(uint16_t h) {
    const uint32_t w = (uint32_t)h << 16, sign = w & 0x80000000u, two_w = w + w;
    const float normalized = bits_to_fp32((two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
    const float denormalized = bits_to_fp32((two_w >> 17) | (126u << 23)) - 0.5f;
    return bits_to_fp32(sign | (two_w < (1u << 27) ? fp32_to_bits(denormalized) : fp32_to_bits(normalized)));
}

static inline float half_at(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return fp16_to_fp32(h);
}

static inline float bf16_to_fp32(uint16_t v) {
    uint32_t bits = (uint32_t)v << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static inline uint16_t fp32_to_bf16(float f) { /* round to nearest even, as torch does */
    uint32_t bits;
    memcpy(&bits, &f, 4);
    if ((bits & 0x7fffffff) > 0x7f800000) return (uint16_t)((bits >> 16) | 0x40); /* NaN */
    bits += 0x7fff + ((bits >> 16) & 1);
    return (uint16_t)(bits >> 16);
}

/* ---- activation quantization ------------------------------------------------------------- */

static void quantize_row(const float *x, int n, qvec out) {
    for (int b = 0; b < n / QK; b++) {
        out.s[b] = 0.0f;
        for (int half = 0; half < 2; half++) {
            const int at = b * QK + half * QH;
            float amax = 0.0f;
            for (int i = 0; i < QH; i++) amax = fmaxf(amax, fabsf(x[at + i]));
            const float d = amax / 127.0f, inv = d > 0.0f ? 1.0f / d : 0.0f;
            int sum = 0;
            for (int i = 0; i < QH; i++) {
                const int v = (int)lrintf(x[at + i] * inv);
                out.q[at + i] = (int8_t)v;
                sum += v;
            }
            out.d[2 * b + half] = d;
            out.s[b] += d * (float)sum;
        }
    }
}

/* ---- one row's dot product, per instruction set ------------------------------------------- */
/* Every type is read as 32-weight blocks w = scale * u + offset, u its integers (unsigned 4-bit for
 * the Q4 types; Q8_0: signed 8-bit, offset 0), so the dot of a block with x is
 * scale * (dx_lo * sum_lo(u qx) + dx_hi * sum_hi(u qx)) + offset * sx.
 *   Q4_0: fp16 d, 16 bytes; u in the "split" order (byte j: low nibble = weight j, high = j + 16);
 *         scale d, offset -8 d.
 *   Q4_1: fp16 d, fp16 m, 16 bytes split; scale d, offset m.
 *   Q8_0: fp16 d, 32 int8; scale d.
 *   Q4_K: super-blocks of 256 (fp16 d, fp16 dmin, 12 bytes of 6-bit scales and mins for its eight
 *         blocks, 128 bytes): block j's 32 nibbles are the low (j even) or high (j odd) halves of
 *         32 bytes; scale d * sc_j, offset -dmin * m_j. */
typedef struct {
    const uint8_t *q; /* the block's integers */
    int shift;        /* Q4_K: which nibble of each byte (0 or 4); -1: the split order */
    float scale, offset;
} block_view;

static inline void k4_scale_min(int j, const uint8_t *sm, int *sc, int *mn) {
    if (j < 4) {
        *sc = sm[j] & 63;
        *mn = sm[j + 4] & 63;
    } else {
        *sc = (sm[j + 4] & 0x0f) | ((sm[j - 4] >> 6) << 4);
        *mn = (sm[j + 4] >> 4) | ((sm[j] >> 6) << 4);
    }
}

static inline block_view view_of(const uint8_t *row, int type, int b) {
    block_view v;
    if (type == T_Q4_K) {
        const uint8_t *sb = row + (size_t)(b / 8) * 144;
        const int j = b % 8;
        int sc, mn;
        k4_scale_min(j, sb + 4, &sc, &mn);
        v.q = sb + 16 + 32 * (j / 2);
        v.shift = 4 * (j & 1);
        v.scale = half_at(sb) * (float)sc;
        v.offset = -half_at(sb + 2) * (float)mn;
        return v;
    }
    const size_t bb = type == T_Q4_0 ? 18 : type == T_Q4_1 ? 20 : 34;
    const uint8_t *blk = row + b * bb;
    v.scale = half_at(blk);
    v.shift = -1;
    v.q = blk + (type == T_Q4_1 ? 4 : 2);
    v.offset = type == T_Q4_1 ? half_at(blk + 2) : type == T_Q4_0 ? -8.0f * v.scale : 0.0f;
    return v;
}

static float dot_generic_pass(const uint8_t *row, int type, int nb, qvec x) {
    float sum = 0.0f;
    for (int b = 0; b < nb; b++) {
        const block_view v = view_of(row, type, b);
        const int8_t *xq = x.q + b * QK;
        int lo = 0, hi = 0; /* the dot over each half of the block */
        for (int i = 0; i < QK; i++) {
            int u;
            if (type == T_Q8_0) u = ((const int8_t *)v.q)[i];
            else if (v.shift < 0) u = i < QH ? v.q[i] & 0x0f : v.q[i - QH] >> 4;
            else u = (v.q[i] >> v.shift) & 0x0f;
            if (i < QH) lo += u * xq[i];
            else hi += u * xq[i];
        }
        sum += v.scale * (x.d[2 * b] * (float)lo + x.d[2 * b + 1] * (float)hi) + v.offset * x.s[b];
    }
    return sum;
}

/* A row's dot with x, plus with `rest` (x's rounding error) when given. */
static float dot_generic(const uint8_t *row, int type, int nb, qvec x, const qvec *rest) {
    return dot_generic_pass(row, type, nb, x) + (rest ? dot_generic_pass(row, type, nb, *rest) : 0.0f);
}

__attribute__((target("avx2,fma,f16c"))) static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* The products' scales: lanes 0-3 hold the first half's sums, lanes 4-7 the second's. */
__attribute__((target("avx2,fma,f16c"))) static inline __m256 half_scales(float d, const float *xd) {
    return _mm256_set_m128(_mm_set1_ps(d * xd[1]), _mm_set1_ps(d * xd[0]));
}

__attribute__((target("avx2,fma,f16c"))) static inline __m256i nibbles32(const uint8_t *qs) {
    const __m128i raw = _mm_loadu_si128((const __m128i *)qs), low = _mm_set1_epi8(0x0f);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(raw, 4), low), _mm_and_si128(raw, low));
}

/* Per block, the weights are unpacked once into an unsigned operand `wu` (Q4: the nibbles; Q8_0:
 * |w|, its sign moved onto the activation), then multiplied with each pass of the activation. The
 * only difference between the two instruction sets is the u8 x s8 dot of 4 bytes into int32:
 * maddubs + madd on AVX2 (int16 pair sums: at most 2 * 127 * 127, no saturation), vpdpbusd on VNNI. */
#define DOT_BODY(U8S8_DOT)                                                                          \
    __m256 acc = _mm256_setzero_ps(), acc_rest = _mm256_setzero_ps();                               \
    float offsets = 0.0f;                                                                           \
    const int q8 = type == T_Q8_0;                                                                  \
    for (int b = 0; b < nb; b++) {                                                                  \
        const block_view v = view_of(row, type, b);                                                 \
        __m256i wu, wq = _mm256_setzero_si256();                                                    \
        if (q8) {                                                                                   \
            wq = _mm256_loadu_si256((const __m256i *)v.q);                                          \
            wu = _mm256_sign_epi8(wq, wq);                                                          \
        } else if (v.shift < 0) {                                                                   \
            wu = nibbles32(v.q);                                                                    \
        } else {                                                                                    \
            wu = _mm256_and_si256(_mm256_srli_epi16(_mm256_loadu_si256((const __m256i *)v.q), v.shift), \
                                  _mm256_set1_epi8(0x0f));                                          \
        }                                                                                           \
        offsets += v.offset * (x.s[b] + (rest ? rest->s[b] : 0.0f));                                \
        __m256i xq = _mm256_loadu_si256((const __m256i *)(x.q + b * QK));                           \
        if (q8) xq = _mm256_sign_epi8(xq, wq);                                                      \
        acc = _mm256_fmadd_ps(half_scales(v.scale, x.d + 2 * b), _mm256_cvtepi32_ps(U8S8_DOT(wu, xq)), acc); \
        if (rest) {                                                                                 \
            __m256i rq = _mm256_loadu_si256((const __m256i *)(rest->q + b * QK));                   \
            if (q8) rq = _mm256_sign_epi8(rq, wq);                                                  \
            acc_rest = _mm256_fmadd_ps(half_scales(v.scale, rest->d + 2 * b),                       \
                                       _mm256_cvtepi32_ps(U8S8_DOT(wu, rq)), acc_rest);            \
        }                                                                                           \
    }                                                                                               \
    return hsum256(_mm256_add_ps(acc, acc_rest)) + offsets;

__attribute__((target("avx2,fma,f16c"))) static inline __m256i u8s8_avx2(__m256i u, __m256i s) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

__attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))
static inline __m256i u8s8_vnni(__m256i u, __m256i s) {
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
}

__attribute__((target("avx2,fma,f16c")))
static float dot_avx2(const uint8_t *row, int type, int nb, qvec x, const qvec *rest) {
    DOT_BODY(u8s8_avx2)
}

__attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))
static float dot_avx512vnni(const uint8_t *row, int type, int nb, qvec x, const qvec *rest) {
    DOT_BODY(u8s8_vnni)
}

typedef float (*dot_fn)(const uint8_t *, int, int, qvec, const qvec *);

static dot_fn dot_for(int isa) {
    return isa == ISA_AVX512VNNI ? dot_avx512vnni : isa == ISA_AVX2 ? dot_avx2 : dot_generic;
}

/* y[r] = W[r] . x for the rows this thread takes (call inside a parallel region); with `rest`
 * (x's rounding error, quantized in turn) each block's weights, once unpacked, serve both. */
static void gemv(const qmat *m, qvec x, const qvec *rest, float *y, dot_fn dot) {
    const int nb = m->cols / QK;
    const size_t row_bytes = row_bytes_of(m->type, m->cols);
#pragma omp for schedule(static)
    for (int r = 0; r < m->rows; r++) {
        const uint8_t *row = m->w + (size_t)r * row_bytes;
        y[r] = dot(row, m->type, nb, x, rest);
    }
}

/* x's int8 form, and with `rest` what that rounding lost, as a second int8 form (~15 bits in all). */
static void quantize_input(const float *x, int n, qvec out, const qvec *rest, float *scratch) {
    quantize_row(x, n, out);
    if (!rest) return;
    for (int i = 0; i < n; i++) scratch[i] = x[i] - out.d[i / QH] * (float)out.q[i];
    quantize_row(scratch, n, *rest);
}

/* ---- the decoder step --------------------------------------------------------------------- */

static void rms_norm(const float *x, const float *w, int n, float eps, float *out) {
    double ss = 0.0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    const float scale = 1.0f / sqrtf((float)(ss / n) + eps);
    for (int i = 0; i < n; i++) out[i] = x[i] * scale * w[i];
}

/* HF-layout RoPE with a sign-folded sin table: x * cos + roll(x, half) * sin. */
static void rope(float *v, const float *cos_row, const float *sin_row, int d) {
    const int half = d / 2;
    float tmp[512];
    memcpy(tmp, v, sizeof(float) * d);
    for (int i = 0; i < d; i++) v[i] = tmp[i] * cos_row[i] + tmp[(i + half) % d] * sin_row[i];
}

static void attend(const float *q, const uint16_t *k, const uint16_t *v, int n, int d, float *scores, float *out) {
    const float scale = 1.0f / sqrtf((float)d);
    float best = -INFINITY;
    for (int t = 0; t < n; t++) {
        const uint16_t *kt = k + (size_t)t * d;
        float s = 0.0f;
        for (int i = 0; i < d; i++) s += q[i] * bf16_to_fp32(kt[i]);
        scores[t] = s * scale;
        best = fmaxf(best, scores[t]);
    }
    float total = 0.0f;
    for (int t = 0; t < n; t++) total += (scores[t] = expf(scores[t] - best));
    for (int i = 0; i < d; i++) out[i] = 0.0f;
    for (int t = 0; t < n; t++) {
        const float p = scores[t] / total;
        const uint16_t *vt = v + (size_t)t * d;
        for (int i = 0; i < d; i++) out[i] += p * bf16_to_fp32(vt[i]);
    }
}

static int max3(int a, int b, int c) { return a > b ? (a > c ? a : c) : (b > c ? b : c); }

/* One token through every layer. x: [dim] fp32, the token's embedding in, the final-normed hidden
 * state out. k_cache / v_cache: bf16 [layers, kv_heads, capacity, head_dim]; position `pos` is
 * written, positions 0..pos attended. cos_row / sin_row: [head_dim] fp32 for `pos`. */
int nd_decode(const model_weights *m, float *x, int pos, uint16_t *k_cache, uint16_t *v_cache, int capacity,
              const float *cos_row, const float *sin_row, int nthreads, int isa) {
    const int D = m->head_dim, H = m->n_heads, KV = m->n_kv_heads, G = H / KV, n = pos + 1;
    const int q_rows = H * D, kv_rows = KV * D, widest = max3(m->dim, m->hidden, q_rows);
    if (D > 512 || pos >= capacity) return -1;
    float *h = malloc(sizeof(float) * widest);
    float *qkv = malloc(sizeof(float) * (q_rows + 2 * kv_rows));
    float *attn = malloc(sizeof(float) * q_rows);
    float *proj = malloc(sizeof(float) * m->dim);
    float *gu = malloc(sizeof(float) * 2 * m->hidden);
    float *scores = malloc(sizeof(float) * (size_t)H * n);
    int8_t *xq = malloc(2 * widest);
    float *xd = malloc(sizeof(float) * 2 * (widest / QH)), *xs = malloc(sizeof(float) * 2 * (widest / QK));
    float *err = malloc(sizeof(float) * widest);
    if (!h || !qkv || !attn || !proj || !gu || !scores || !xq || !xd || !xs || !err) {
        free(h); free(qkv); free(attn); free(proj); free(gu); free(scores); free(xq); free(xd); free(xs); free(err);
        return -2;
    }
    const qvec act = {xq, xd, xs}, act_rest = {xq + widest, xd + widest / QH, xs + widest / QK};
    const qvec *rest_qkv = m->precise & PRECISE_QKV ? &act_rest : NULL, *rest_o = m->precise & PRECISE_O ? &act_rest : NULL;
    const qvec *rest_gu = m->precise & PRECISE_GATE_UP ? &act_rest : NULL, *rest_down = m->precise & PRECISE_DOWN ? &act_rest : NULL;
    const dot_fn dot = dot_for(isa);
    const size_t layer_stride = (size_t)KV * capacity * D;

#pragma omp parallel num_threads(nthreads)
    for (int l = 0; l < m->n_layers; l++) {
        const layer_weights *lw = &m->layers[l];
        uint16_t *kl = k_cache + l * layer_stride, *vl = v_cache + l * layer_stride;
#pragma omp single
        {
            rms_norm(x, lw->attn_norm, m->dim, m->eps, h);
            quantize_input(h, m->dim, act, rest_qkv, err);
        }
        gemv(&lw->qkv, act, rest_qkv, qkv, dot);
#pragma omp single
        {
            if (lw->qkv_bias)
                for (int i = 0; i < q_rows + 2 * kv_rows; i++) qkv[i] += lw->qkv_bias[i];
            if (lw->q_norm)
                for (int hh = 0; hh < H + KV; hh++)
                    rms_norm(qkv + hh * D, hh < H ? lw->q_norm : lw->k_norm, D, m->eps, qkv + hh * D);
            for (int hh = 0; hh < H + KV; hh++) rope(qkv + hh * D, cos_row, sin_row, D);
            for (int kh = 0; kh < KV; kh++) {
                const float *kv_k = qkv + q_rows + kh * D, *kv_v = qkv + q_rows + kv_rows + kh * D;
                uint16_t *kd = kl + ((size_t)kh * capacity + pos) * D, *vd = vl + ((size_t)kh * capacity + pos) * D;
                for (int i = 0; i < D; i++) {
                    kd[i] = fp32_to_bf16(kv_k[i]);
                    vd[i] = fp32_to_bf16(kv_v[i]);
                }
            }
        }
#pragma omp for schedule(static)
        for (int hh = 0; hh < H; hh++) {
            const size_t base = (size_t)(hh / G) * capacity * D;
            attend(qkv + hh * D, kl + base, vl + base, n, D, scores + (size_t)hh * n, attn + hh * D);
        }
#pragma omp single
        quantize_input(attn, q_rows, act, rest_o, err);
        gemv(&lw->o, act, rest_o, proj, dot);
#pragma omp single
        {
            for (int i = 0; i < m->dim; i++) x[i] += proj[i];
            rms_norm(x, lw->ffn_norm, m->dim, m->eps, h);
            quantize_input(h, m->dim, act, rest_gu, err);
        }
        gemv(&lw->gate_up, act, rest_gu, gu, dot);
#pragma omp single
        {
            for (int i = 0; i < m->hidden; i++) {
                const float g = gu[i];
                h[i] = g / (1.0f + expf(-g)) * gu[m->hidden + i];
            }
            quantize_input(h, m->hidden, act, rest_down, err);
        }
        gemv(&lw->down, act, rest_down, proj, dot);
#pragma omp single
        for (int i = 0; i < m->dim; i++) x[i] += proj[i];
    }
    rms_norm(x, m->final_norm, m->dim, m->eps, h);
    memcpy(x, h, sizeof(float) * m->dim);
    free(h); free(qkv); free(attn); free(proj); free(gu); free(scores); free(xq); free(xd); free(xs); free(err);
    return 0;
}

/* y = W x for one matrix (tests): x fp32 [cols] quantized here, with its rounding error as a second
 * pass when `precise`. */
int nd_gemv(const qmat *m, const float *x, float *y, int precise, int nthreads, int isa) {
    const int n = m->cols;
    int8_t *xq = malloc(2 * n);
    float *xd = malloc(sizeof(float) * 2 * (n / QH)), *xs = malloc(sizeof(float) * 2 * (n / QK));
    float *err = malloc(sizeof(float) * n);
    if (!xq || !xd || !xs || !err) { free(xq); free(xd); free(xs); free(err); return -2; }
    const qvec act = {xq, xd, xs}, act_rest = {xq + n, xd + n / QH, xs + n / QK};
    const qvec *rest = precise ? &act_rest : NULL;
    quantize_input(x, n, act, rest, err);
    const dot_fn dot = dot_for(isa);
#pragma omp parallel num_threads(nthreads)
    gemv(m, act, rest, y, dot);
    free(xq); free(xd); free(xs); free(err);
    return 0;
}

/* Which instruction sets this CPU runs: a bit per ISA_* value. */
int nd_cpu_isas(void) {
    __builtin_cpu_init();
    int isas = 1 << ISA_GENERIC;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) isas |= 1 << ISA_AVX2;
    if (__builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw"))
        isas |= 1 << ISA_AVX512VNNI;
    return isas;
}
