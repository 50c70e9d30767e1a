/* Native one-token decode for the fast engine: GEMV kernels over GGUF's own quantized blocks
 * (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K) with an int8-quantized activation (a scale per 16 values), and a
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

enum { T_Q4_0 = 2, T_Q4_1 = 3, T_Q5_0 = 6, T_Q5_1 = 7, T_Q8_0 = 8, T_Q4_K = 12, T_Q5_K = 13, T_Q6_K = 14 }; /* ggml type ids */
#define QK_K 256 /* a K-quant super-block */
enum { ISA_GENERIC = 0, ISA_AVX2 = 1, ISA_AVX512VNNI = 2 };

typedef struct {
    const uint8_t *w; /* rows x (cols / 32) blocks, row-major, the GGUF block layout */
    int32_t type, rows, cols;
} qmat;

typedef struct {
    qmat q, k, v, o, gate, up, down; /* each of its own type (a Q4_K_M file mixes them) */
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
 * d[2 b], d[2 b + 1] of block b, and s[2 b], s[2 b + 1] = each half's sum of d * q (for the weights'
 * offsets). */
#define QH (QK / 2)
typedef struct {
    int8_t *q;
    float *d, *s;
} qvec;

static size_t row_bytes_of(int type, int cols) {
    switch (type) {
    case T_Q4_0: return (size_t)cols / QK * 18;
    case T_Q4_1: return (size_t)cols / QK * 20;
    case T_Q5_0: return (size_t)cols / QK * 22;
    case T_Q5_1: return (size_t)cols / QK * 24;
    case T_Q4_K: return (size_t)cols / QK_K * 144;
    case T_Q5_K: return (size_t)cols / QK_K * 176;
    case T_Q6_K: return (size_t)cols / QK_K * 210;
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
#define INLINE static inline __attribute__((always_inline))

INLINE float fp16_to_fp32(uint16_t h) {
    const uint32_t w = (uint32_t)h << 16, sign = w & 0x80000000u, two_w = w + w;
    const float normalized = bits_to_fp32((two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
    const float denormalized = bits_to_fp32((two_w >> 17) | (126u << 23)) - 0.5f;
    return bits_to_fp32(sign | (two_w < (1u << 27) ? fp32_to_bits(denormalized) : fp32_to_bits(normalized)));
}

INLINE float half_at(const uint8_t *p) {
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
            out.s[2 * b + half] = d * (float)sum;
        }
    }
}

/* ---- one row's dot product, per instruction set ------------------------------------------- */
/* Every type is read as 32-weight blocks, each half (16 weights) w = scale * u + offset, u its
 * integers (unsigned: 4 bits, 5 with Q5's fifth bits, 6 with Q6_K's two high bits; Q8_0: signed,
 * offset 0), so a block's dot with x is the sum over its halves of
 * scale * dx * sum(u qx) + offset * sx.
 *   Q4_0: fp16 d, 16 bytes; u in the "split" order (byte j: low nibble = weight j, high = j + 16);
 *         scale d, offset -8 d.         Q4_1: fp16 d, fp16 m, 16 bytes split; scale d, offset m.
 *   Q5_0: fp16 d, 32 fifth bits (bit j: weight j), 16 bytes split; scale d, offset -16 d.
 *   Q5_1: fp16 d, fp16 m, 32 fifth bits, 16 bytes split; scale d, offset m.
 *   Q8_0: fp16 d, 32 int8; scale d.
 *   Q4_K: super-blocks of 256 (fp16 d, fp16 dmin, 12 bytes of 6-bit scales and mins for its eight
 *         blocks, 128 bytes): block j's 32 nibbles are the low (j even) or high (j odd) halves of
 *         32 bytes; scale d * sc_j, offset -dmin * m_j.
 *   Q5_K: as Q4_K with 32 bytes of fifth bits after the scales (bit j of byte i: weight i of block j),
 *         176 bytes.
 *   Q6_K: super-blocks of 256 (128 bytes of low nibbles, 64 of 2-bit highs, 16 int8 scales, fp16 d),
 *         as two 128-weight halves; in a half, block g (0..3) takes the low (g < 2) or high nibbles
 *         of 32 bytes at (g & 1) * 32 and bits 2g..2g+1 of 32 high bytes; a scale per 16 weights:
 *         scale d * sc, offset -32 d * sc. */
typedef struct {
    const uint8_t *q;  /* the block's low bits (Q8_0: its int8) */
    const uint8_t *qh; /* Q5_0/Q5_1: 4 bytes of fifth bits; Q5_K: 32 bytes, one bit each at hshift;
                          Q6_K: 32 bytes, two bits each at hshift; else NULL */
    int shift;         /* -1: the split order; 0 or 4: which nibble of each of 32 bytes */
    int hshift;
    float scale[2], offset[2];
} block_view;

INLINE void k4_scale_min(int j, const uint8_t *sm, int *sc, int *mn) {
    if (j < 4) {
        *sc = sm[j] & 63;
        *mn = sm[j + 4] & 63;
    } else {
        *sc = (sm[j + 4] & 0x0f) | ((sm[j - 4] >> 6) << 4);
        *mn = (sm[j + 4] >> 4) | ((sm[j] >> 6) << 4);
    }
}

/* A block's view, with HALF converting its fp16 fields: software on the portable path, F16C on
 * the AVX paths (the same values: all 65536 checked). */
#define VIEW_OF_BODY(HALF) \
{                                                                                                                           \
    block_view v = {0};                                                                                                     \
    v.shift = -1;                                                                                                           \
    if (type == T_Q4_K || type == T_Q5_K) {                                                                                 \
        const int five = type == T_Q5_K;                                                                                    \
        const uint8_t *sb = row + (size_t)(b / 8) * (five ? 176 : 144);                                                     \
        const int j = b % 8;                                                                                                \
        int sc, mn;                                                                                                         \
        k4_scale_min(j, sb + 4, &sc, &mn);                                                                                  \
        v.q = sb + 16 + 32 * five + 32 * (j / 2);                                                                           \
        v.qh = five ? sb + 16 : NULL;                                                                                       \
        v.hshift = j;                                                                                                       \
        v.shift = 4 * (j & 1);                                                                                              \
        v.scale[0] = v.scale[1] = HALF(sb) * (float)sc;                                                                     \
        v.offset[0] = v.offset[1] = -HALF(sb + 2) * (float)mn;                                                              \
        return v;                                                                                                           \
    }                                                                                                                       \
    if (type == T_Q6_K) {                                                                                                   \
        const uint8_t *sb = row + (size_t)(b / 8) * 210;                                                                    \
        const int j = b % 8, n = j / 4, g = j % 4;                                                                          \
        const int8_t *sc = (const int8_t *)(sb + 192) + n * 8 + 2 * g;                                                      \
        const float d = HALF(sb + 208);                                                                                     \
        v.q = sb + n * 64 + (g & 1) * 32;                                                                                   \
        v.shift = g < 2 ? 0 : 4;                                                                                            \
        v.qh = sb + 128 + n * 32;                                                                                           \
        v.hshift = 2 * g;                                                                                                   \
        for (int h = 0; h < 2; h++) {                                                                                       \
            v.scale[h] = d * (float)sc[h];                                                                                  \
            v.offset[h] = -32.0f * v.scale[h];                                                                              \
        }                                                                                                                   \
        return v;                                                                                                           \
    }                                                                                                                       \
    static const size_t bytes[16] = {[T_Q4_0] = 18, [T_Q4_1] = 20, [T_Q5_0] = 22, [T_Q5_1] = 24, [T_Q8_0] = 34};            \
    const uint8_t *blk = row + b * bytes[type];                                                                             \
    const float d = HALF(blk);                                                                                              \
    const int has_min = type == T_Q4_1 || type == T_Q5_1, five = type == T_Q5_0 || type == T_Q5_1;                          \
    v.qh = five ? blk + (has_min ? 4 : 2) : NULL;                                                                           \
    v.q = blk + 2 + 2 * has_min + 4 * five;                                                                                 \
    v.scale[0] = v.scale[1] = d;                                                                                            \
    v.offset[0] = v.offset[1] = has_min ? HALF(blk + 2) : type == T_Q4_0 ? -8.0f * d : type == T_Q5_0 ? -16.0f * d : 0.0f;  \
    return v;                                                                                                               \
}

INLINE block_view view_of(const uint8_t *row, int type, int b) VIEW_OF_BODY(half_at)

/* Weight i (0..31) of a block as its unsigned integer u (Q8_0: signed). */
INLINE int integer_at(const block_view *v, int type, int i) {
    if (type == T_Q8_0) return ((const int8_t *)v->q)[i];
    int u = v->shift < 0 ? (i < QH ? v->q[i] & 0x0f : v->q[i - QH] >> 4) : (v->q[i] >> v->shift) & 0x0f;
    if (type == T_Q6_K) u |= ((v->qh[i] >> v->hshift) & 3) << 4;
    else if (type == T_Q5_K) u |= ((v->qh[i] >> v->hshift) & 1) << 4;
    else if (v->qh) u |= ((v->qh[i / 8] >> (i % 8)) & 1) << 4;
    return u;
}

static float dot_generic_pass(const uint8_t *row, int type, int nb, qvec x) {
    float sum = 0.0f;
    for (int b = 0; b < nb; b++) {
        const block_view v = view_of(row, type, b);
        const int8_t *xq = x.q + b * QK;
        for (int h = 0; h < 2; h++) {
            int acc = 0;
            for (int i = h * QH; i < (h + 1) * QH; i++) acc += integer_at(&v, type, i) * xq[i];
            sum += v.scale[h] * x.d[2 * b + h] * (float)acc + v.offset[h] * x.s[2 * b + h];
        }
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

__attribute__((target("avx2,fma,f16c"))) INLINE float half_f16c(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

__attribute__((target("avx2,fma,f16c"))) INLINE block_view view_of_f16c(const uint8_t *row, int type, int b)
VIEW_OF_BODY(half_f16c)

/* The products' scales: lanes 0-3 hold the first half's sums, lanes 4-7 the second's. */
__attribute__((target("avx2,fma,f16c"))) INLINE __m256 half_scales(const float *scale, const float *xd) {
    return _mm256_set_m128(_mm_set1_ps(scale[1] * xd[1]), _mm_set1_ps(scale[0] * xd[0]));
}

__attribute__((target("avx2,fma,f16c"))) INLINE __m256i nibbles32(const uint8_t *qs) {
    const __m128i raw = _mm_loadu_si128((const __m128i *)qs), low = _mm_set1_epi8(0x0f);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(raw, 4), low), _mm_and_si128(raw, low));
}

/* Per block, the weights are unpacked once into an unsigned operand `wu` (Q4: the nibbles; Q8_0:
 * |w|, its sign moved onto the activation), then multiplied with each pass of the activation. The
 * only difference between the two instruction sets is the u8 x s8 dot of 4 bytes into int32:
 * maddubs + madd on AVX2 (int16 pair sums: at most 2 * 127 * 127, no saturation), vpdpbusd on VNNI. */
/* Q5's 32 fifth bits as 32 bytes of 0 or 16, byte i from bit i. */
__attribute__((target("avx2,fma,f16c"))) INLINE __m256i fifth_bits(const uint8_t *qh) {
    uint32_t bits;
    memcpy(&bits, qh, 4);
    const __m256i byte_of_bit = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                                 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i bit = _mm256_set1_epi64x(0x8040201008040201);
    const __m256i spread = _mm256_and_si256(_mm256_shuffle_epi8(_mm256_set1_epi32((int)bits), byte_of_bit), bit);
    return _mm256_and_si256(_mm256_cmpeq_epi8(spread, bit), _mm256_set1_epi8(16));
}

/* The block's integers as 32 unsigned bytes (Q8_0: |w|, its sign then moved onto the activation). */
__attribute__((target("avx2,fma,f16c"))) INLINE __m256i unsigned_operand(const block_view *v, int type, __m256i *wq) {
    if (type == T_Q8_0) {
        *wq = _mm256_loadu_si256((const __m256i *)v->q);
        return _mm256_sign_epi8(*wq, *wq);
    }
    const __m256i low4 = _mm256_set1_epi8(0x0f);
    __m256i u = v->shift < 0 ? nibbles32(v->q)
                             : _mm256_and_si256(_mm256_srli_epi16(_mm256_loadu_si256((const __m256i *)v->q), v->shift), low4);
    if (type == T_Q6_K) {
        const __m256i high = _mm256_and_si256(_mm256_srli_epi16(_mm256_loadu_si256((const __m256i *)v->qh), v->hshift),
                                              _mm256_set1_epi8(3));
        u = _mm256_or_si256(u, _mm256_slli_epi16(high, 4)); /* each byte <= 3 before: nothing crosses into the next */
    } else if (type == T_Q5_K) {
        const __m256i bit = _mm256_set1_epi8((char)(1 << v->hshift));
        const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(_mm256_loadu_si256((const __m256i *)v->qh), bit), bit);
        u = _mm256_or_si256(u, _mm256_and_si256(set, _mm256_set1_epi8(16)));
    } else if (v->qh) {
        u = _mm256_or_si256(u, fifth_bits(v->qh));
    }
    return u;
}

/* The unsigned operand is built once per block and multiplied with each pass of the activation.
 * The instruction sets differ only in the u8 x s8 dot of 4 bytes into int32: maddubs + madd on
 * AVX2 (int16 pair sums: at most 2 x 127 x 127, no saturation), vpdpbusd on VNNI. */
#define DOT_LOOP(U8S8_DOT, type)                                                                    \
    __m256 acc = _mm256_setzero_ps(), acc_rest = _mm256_setzero_ps();                               \
    float offsets = 0.0f;                                                                           \
    const int q8 = type == T_Q8_0;                                                                  \
    for (int b = 0; b < nb; b++) {                                                                  \
        const block_view v = view_of_f16c(row, type, b);                                            \
        __m256i wq = _mm256_setzero_si256();                                                        \
        const __m256i wu = unsigned_operand(&v, type, &wq);                                         \
        for (int h = 0; h < 2; h++)                                                                 \
            offsets += v.offset[h] * (x.s[2 * b + h] + (rest ? rest->s[2 * b + h] : 0.0f));         \
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

/* One loop per type, the type a constant in it: the per-block branches on it fold away. */
#define DOT_BODY(U8S8_DOT)                                                                          \
    switch (type) {                                                                                 \
    case T_Q4_0: { DOT_LOOP(U8S8_DOT, T_Q4_0) }                                                     \
    case T_Q4_1: { DOT_LOOP(U8S8_DOT, T_Q4_1) }                                                     \
    case T_Q5_0: { DOT_LOOP(U8S8_DOT, T_Q5_0) }                                                     \
    case T_Q5_1: { DOT_LOOP(U8S8_DOT, T_Q5_1) }                                                     \
    case T_Q8_0: { DOT_LOOP(U8S8_DOT, T_Q8_0) }                                                     \
    case T_Q4_K: { DOT_LOOP(U8S8_DOT, T_Q4_K) }                                                     \
    case T_Q5_K: { DOT_LOOP(U8S8_DOT, T_Q5_K) }                                                     \
    default: { DOT_LOOP(U8S8_DOT, T_Q6_K) }                                                         \
    }

__attribute__((target("avx2,fma,f16c"))) INLINE __m256i u8s8_avx2(__m256i u, __m256i s) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

__attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))
INLINE __m256i u8s8_vnni(__m256i u, __m256i s) {
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
    /* no barrier here: matrices of one input (Q, K, V; gate, up) run back to back, the caller waits */
#pragma omp for schedule(static) nowait
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
    float *xd = malloc(sizeof(float) * 2 * (widest / QH)), *xs = malloc(sizeof(float) * 2 * (widest / QH));
    float *err = malloc(sizeof(float) * widest);
    if (!h || !qkv || !attn || !proj || !gu || !scores || !xq || !xd || !xs || !err) {
        free(h); free(qkv); free(attn); free(proj); free(gu); free(scores); free(xq); free(xd); free(xs); free(err);
        return -2;
    }
    const qvec act = {xq, xd, xs}, act_rest = {xq + widest, xd + widest / QH, xs + widest / QH};
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
        gemv(&lw->q, act, rest_qkv, qkv, dot);
        gemv(&lw->k, act, rest_qkv, qkv + q_rows, dot);
        gemv(&lw->v, act, rest_qkv, qkv + q_rows + kv_rows, dot);
#pragma omp barrier
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
#pragma omp barrier
#pragma omp single
        {
            for (int i = 0; i < m->dim; i++) x[i] += proj[i];
            rms_norm(x, lw->ffn_norm, m->dim, m->eps, h);
            quantize_input(h, m->dim, act, rest_gu, err);
        }
        gemv(&lw->gate, act, rest_gu, gu, dot);
        gemv(&lw->up, act, rest_gu, gu + m->hidden, dot);
#pragma omp barrier
#pragma omp single
        {
            for (int i = 0; i < m->hidden; i++) {
                const float g = gu[i];
                h[i] = g / (1.0f + expf(-g)) * gu[m->hidden + i];
            }
            quantize_input(h, m->hidden, act, rest_down, err);
        }
        gemv(&lw->down, act, rest_down, proj, dot);
#pragma omp barrier
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
    float *xd = malloc(sizeof(float) * 2 * (n / QH)), *xs = malloc(sizeof(float) * 2 * (n / QH));
    float *err = malloc(sizeof(float) * n);
    if (!xq || !xd || !xs || !err) { free(xq); free(xd); free(xs); free(err); return -2; }
    const qvec act = {xq, xd, xs}, act_rest = {xq + n, xd + n / QH, xs + n / QH};
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
