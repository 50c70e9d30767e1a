/* Native one-token decode for the fast engine: GEMV kernels over GGUF's own quantized blocks
 * (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K) with an int16-quantized activation (a scale per
 * 32 values), and a whole decoder step (every layer: RMSNorm, QKV, RoPE, KV write, attention, O,
 * SiLU MLP, then the final norm and the output head) in one call, so a token costs one dispatch
 * instead of ~1300 torch ops.
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
    const int8_t *q; /* [rows, cols] int8 */
    const float *d;  /* their scales: [rows, cols / 32] (Q8_0 rows), or [rows] with per_row */
    int32_t rows, cols, per_row;
} q8_rows;

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
    q8_rows head; /* head.q NULL: no logits here (the caller's head reads the normed state) */
} model_weights;

/* An activation quantized to int16 in blocks of 32 (one weight block): q, the scale d[b] of block b
 * and s[b] = d[b] * sum(q) over it (for the offsets of the types with a minimum). About 15 bits:
 * one int8 pass (llama.cpp's Q8_1 form) measured at the quality guard's limit, and int16 costs
 * nothing more on AVX2 (vpmaddwd instead of vpmaddubsw + vpmaddwd). */
#define QH (QK / 2)
typedef struct {
    int16_t *q;
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

/* Bytes of one 32-weight block of the simple types (fp16 d, Q4_1/Q5_1: fp16 m, Q5: 32 fifth bits, then its integers). */
static const size_t SIMPLE_BYTES[16] = {[T_Q4_0] = 18, [T_Q4_1] = 20, [T_Q5_0] = 22, [T_Q5_1] = 24, [T_Q8_0] = 34};

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

/* x in runs of 32 (one weight block), each rounded to int16 with the scale amax / 32767. */
static void quantize_row(const float *x, int n, qvec out) {
    for (int b = 0; b < n / QK; b++) {
        const float *xb = x + b * QK;
        float amax = 0.0f;
        for (int i = 0; i < QK; i++) amax = fmaxf(amax, fabsf(xb[i]));
        const float d = amax / 32767.0f, inv = d > 0.0f ? 1.0f / d : 0.0f;
        int sum = 0;
        for (int i = 0; i < QK; i++) {
            long v = lrintf(xb[i] * inv);
            v = v > 32767 ? 32767 : v < -32767 ? -32767 : v; /* float rounding of amax * inv, never more */
            out.q[b * QK + i] = (int16_t)v;
            sum += (int)v;
        }
        out.d[b] = d;
        out.s[b] = d * (float)sum;
    }
}

/* ---- blocks -------------------------------------------------------------------------------- */
/* Every type is read as 32-weight blocks: w = scale * (u - centre) + offset, u its integers
 * (4 bits, 5 with Q5's fifth bits, 6 with Q6_K's two high bits; Q8_0: signed, centre 0), with one
 * scale per block except Q6_K (one per 16 weights), and an offset only in the types with a minimum
 * (Q4_1, Q5_1, Q4_K, Q5_K). A block's dot with x is then scale * dx * sum((u - centre) qx) + offset * sx.
 *   Q4_0: fp16 d, 16 bytes; u in the "split" order (byte j: low nibble = weight j, high = j + 16);
 *         scale d, centre 8.               Q4_1: fp16 d, fp16 m, 16 bytes split; scale d, offset m.
 *   Q5_0: fp16 d, 32 fifth bits (bit j: weight j), 16 bytes split; scale d, centre 16.
 *   Q5_1: fp16 d, fp16 m, 32 fifth bits, 16 bytes split; scale d, offset m.
 *   Q8_0: fp16 d, 32 int8; scale d.
 *   Q4_K: super-blocks of 256 (fp16 d, fp16 dmin, 12 bytes of 6-bit scales and mins for its eight
 *         blocks, 128 bytes): block j's 32 nibbles are the low (j even) or high (j odd) halves of
 *         32 bytes; scale d * sc_j, offset -dmin * m_j.
 *   Q5_K: as Q4_K with 32 bytes of fifth bits after the scales (bit j of byte i: weight i of block j),
 *         176 bytes.
 *   Q6_K: super-blocks of 256 (128 bytes of low nibbles, 64 of 2-bit highs, 16 int8 scales, fp16 d),
 *         as two 128-weight halves; in a half, block g (0..3) takes the low (g < 2) or high nibbles
 *         of 32 bytes at (g & 1) * 32 and bits 2g..2g+1 of 32 high bytes; centre 32 and a scale
 *         d * sc per 16 weights. */
typedef struct {
    const uint8_t *q;  /* the block's low bits (Q8_0: its int8) */
    const uint8_t *qh; /* Q5_0/Q5_1: 4 bytes of fifth bits; Q5_K: 32 bytes, one bit each at hshift;
                          Q6_K: 32 bytes, two bits each at hshift; else NULL */
    int shift;         /* -1: the split order; 0 or 4: which nibble of each of 32 bytes */
    int hshift, centre;
    float scale[2], offset; /* scale[1] differs from scale[0] only in Q6_K */
} block_view;

#define TWO_SCALES(type) ((type) == T_Q6_K)
#define HAS_OFFSET(type) ((type) == T_Q4_1 || (type) == T_Q5_1 || (type) == T_Q4_K || (type) == T_Q5_K)

INLINE void k4_scale_min(int j, const uint8_t *sm, int *sc, int *mn) {
    if (j < 4) {
        *sc = sm[j] & 63;
        *mn = sm[j + 4] & 63;
    } else {
        *sc = (sm[j + 4] & 0x0f) | ((sm[j - 4] >> 6) << 4);
        *mn = (sm[j + 4] >> 4) | ((sm[j] >> 6) << 4);
    }
}

/* A simple type's block at blk: where its bits are (its fp16 fields are read by the caller). */
INLINE block_view simple_view(const uint8_t *blk, int type) {
    const int has_min = type == T_Q4_1 || type == T_Q5_1, five = type == T_Q5_0 || type == T_Q5_1;
    block_view v = {0};
    v.shift = -1;
    v.qh = five ? blk + 2 + 2 * has_min : NULL;
    v.q = blk + 2 + 2 * has_min + 4 * five;
    v.centre = type == T_Q4_0 ? 8 : type == T_Q5_0 ? 16 : 0;
    return v;
}

/* A block's view, with HALF converting its fp16 fields: software on the portable path, F16C on
 * the AVX paths (the same values: all 65536 checked). */
#define VIEW_OF_BODY(HALF)                                                                                                  \
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
        v.offset = -HALF(sb + 2) * (float)mn;                                                                               \
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
        v.centre = 32;                                                                                                      \
        v.scale[0] = d * (float)sc[0];                                                                                      \
        v.scale[1] = d * (float)sc[1];                                                                                      \
        return v;                                                                                                           \
    }                                                                                                                       \
    const uint8_t *blk = row + b * SIMPLE_BYTES[type];                                                                             \
    v = simple_view(blk, type);                                                                                          \
    v.scale[0] = v.scale[1] = HALF(blk);                                                                                   \
    v.offset = HAS_OFFSET(type) ? HALF(blk + 2) : 0.0f;                                                                    \
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

/* ---- rows' dot products, per instruction set ----------------------------------------------- */
/* A GEMV takes ROWS rows at a time: the activation's block is loaded once for all of them. */
#define ROWS 4

static float dot_generic(const uint8_t *row, int type, int nb, qvec x) {
    float sum = 0.0f;
    for (int b = 0; b < nb; b++) {
        const block_view v = view_of(row, type, b);
        const int16_t *xq = x.q + b * QK;
        int acc[2] = {0, 0}; /* |each| <= 16 x 127 x 32767: int32 */
        for (int i = 0; i < QK; i++) acc[i / QH] += (integer_at(&v, type, i) - v.centre) * xq[i];
        const float ints = TWO_SCALES(type) ? v.scale[0] * (float)acc[0] + v.scale[1] * (float)acc[1]
                                            : v.scale[0] * (float)(acc[0] + acc[1]);
        sum += x.d[b] * ints + v.offset * x.s[b];
    }
    return sum;
}

static void rows_generic(const uint8_t *w, size_t stride, int type, int n, int nb, qvec x, float *y) {
    for (int r = 0; r < n; r++) y[r] = dot_generic(w + r * stride, type, nb, x);
}

#define AVX2 __attribute__((target("avx2,fma,f16c")))
#define VNNI __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))

AVX2 static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

AVX2 INLINE float half_f16c(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}


/* Q5's 32 fifth bits as 32 bytes of 0 or 16, byte i from bit i. */
AVX2 INLINE __m256i fifth_bits(const uint8_t *qh) {
    uint32_t bits;
    memcpy(&bits, qh, 4);
    const __m256i byte_of_bit = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                                 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i bit = _mm256_set1_epi64x(0x8040201008040201);
    const __m256i spread = _mm256_and_si256(_mm256_shuffle_epi8(_mm256_set1_epi32((int)bits), byte_of_bit), bit);
    return _mm256_and_si256(_mm256_cmpeq_epi8(spread, bit), _mm256_set1_epi8(16));
}

/* The block's 32 integers as 16-bit lanes, weights 0-15 in *lo and 16-31 in *hi, centred. */
AVX2 INLINE void weights16(const block_view *v, int type, __m256i *lo, __m256i *hi) {
    const __m128i low4 = _mm_set1_epi8(0x0f);
    if (type == T_Q8_0) {
        *lo = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)v->q));
        *hi = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(v->q + QH)));
        return;
    }
    if (type == T_Q4_0 || type == T_Q4_1) { /* the split order: each byte widened holds weights j and j + 16 */
        const __m256i both = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)v->q));
        *lo = _mm256_and_si256(both, _mm256_set1_epi16(0x0f));
        *hi = _mm256_srli_epi16(both, 4);
    } else if (type == T_Q4_K) { /* one nibble of each of 32 bytes, widened first */
        const __m256i a = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)v->q));
        const __m256i b = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(v->q + QH)));
        if (v->shift) {
            *lo = _mm256_srli_epi16(a, 4);
            *hi = _mm256_srli_epi16(b, 4);
        } else {
            *lo = _mm256_and_si256(a, _mm256_set1_epi16(0x0f));
            *hi = _mm256_and_si256(b, _mm256_set1_epi16(0x0f));
        }
    } else {
        __m256i u;
        if (v->shift < 0) { /* Q5_0, Q5_1: split nibbles and the fifth bits */
            const __m128i raw = _mm_loadu_si128((const __m128i *)v->q);
            u = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(raw, 4), low4), _mm_and_si128(raw, low4));
            u = _mm256_or_si256(u, fifth_bits(v->qh));
        } else {
            u = _mm256_and_si256(_mm256_srli_epi16(_mm256_loadu_si256((const __m256i *)v->q), v->shift),
                                 _mm256_set1_epi8(0x0f));
            const __m256i high = _mm256_srli_epi16(_mm256_loadu_si256((const __m256i *)v->qh), v->hshift);
            if (type == T_Q6_K) /* each byte <= 3 before the shift: nothing crosses into the next */
                u = _mm256_or_si256(u, _mm256_slli_epi16(_mm256_and_si256(high, _mm256_set1_epi8(3)), 4));
            else if (type == T_Q5_K)
                u = _mm256_or_si256(u, _mm256_slli_epi16(_mm256_and_si256(high, _mm256_set1_epi8(1)), 4));
        }
        *lo = _mm256_cvtepu8_epi16(_mm256_castsi256_si128(u));
        *hi = _mm256_cvtepu8_epi16(_mm256_extracti128_si256(u, 1));
    }
    if (v->centre) {
        const __m256i centre = _mm256_set1_epi16((short)v->centre);
        *lo = _mm256_sub_epi16(*lo, centre);
        *hi = _mm256_sub_epi16(*hi, centre);
    }
}

/* The 16-bit dot of 16 weights with 16 activations into 8 int32 lanes: vpmaddwd on AVX2, vpdpwssd
 * on VNNI (|each lane| <= 4 x 128 x 32767: no overflow). */
#define MADD_AVX2(acc, w, x) _mm256_add_epi32(acc, _mm256_madd_epi16(w, x))
#define MADD_VNNI(acc, w, x) _mm256_dpwssd_epi32(acc, w, x)

/* Block b of a K-quant row: where its bits are (its scales: super_block_scales). */
INLINE block_view k_view(const uint8_t *row, int type, int b) {
    block_view v = {0};
    const int j = b % 8;
    if (type == T_Q6_K) {
        const uint8_t *sb = row + (size_t)(b / 8) * 210;
        const int n = j / 4, g = j % 4;
        v.q = sb + n * 64 + (g & 1) * 32;
        v.shift = g < 2 ? 0 : 4;
        v.qh = sb + 128 + n * 32;
        v.hshift = 2 * g;
        v.centre = 32;
        return v;
    }
    const int five = type == T_Q5_K;
    const uint8_t *sb = row + (size_t)(b / 8) * (five ? 176 : 144);
    v.q = sb + 16 + 32 * five + 32 * (j / 2);
    v.qh = five ? sb + 16 : NULL;
    v.hshift = j;
    v.shift = 4 * (j & 1);
    return v;
}

/* Super-block `sb` of a K-quant row: the scale of each 16 weights and the offset of each block. */
AVX2 INLINE void super_block_scales(const uint8_t *row, int type, int sb, float *scale, float *offset) {
    if (type == T_Q6_K) {
        const uint8_t *at = row + (size_t)sb * 210;
        const float d = half_f16c(at + 208);
        const int8_t *sc = (const int8_t *)(at + 192);
        for (int i = 0; i < 16; i++) scale[i] = d * (float)sc[i];
        return;
    }
    const uint8_t *at = row + (size_t)sb * (type == T_Q5_K ? 176 : 144);
    const float d = half_f16c(at), dmin = half_f16c(at + 2);
    for (int j = 0; j < 8; j++) {
        int sc, mn;
        k4_scale_min(j, at + 4, &sc, &mn);
        scale[2 * j] = scale[2 * j + 1] = d * (float)sc;
        offset[j] = -dmin * (float)mn;
    }
}

/* n (<= ROWS) rows, `stride` bytes apart, of one type, dotted with x into y. The simple types
 * (a block: fp16 d, for Q4_1/Q5_1 then fp16 m, then its integers) read d and m with one vector
 * conversion and scale them by the activation's (d, s) in one multiply; the K-quants go through
 * their block view. */
#define SIMPLE(type) ((type) == T_Q4_0 || (type) == T_Q4_1 || (type) == T_Q5_0 || (type) == T_Q5_1 || (type) == T_Q8_0)
#define ROWS_BODY(MADD)                                                                                          \
    __m256 acc[ROWS];                                                                                            \
    __m128 off[ROWS]; /* lane 1: the sum of offset * s (lane 0 is not read) */                                  \
    float kscale[ROWS][16], koffset[ROWS][8]; /* K-quants: the current super-block's, per 16 weights / per block */ \
    for (int r = 0; r < n; r++) {                                                                                \
        acc[r] = _mm256_setzero_ps();                                                                            \
        off[r] = _mm_setzero_ps();                                                                               \
    }                                                                                                            \
    const __m256i zero = _mm256_setzero_si256();                                                                 \
    for (int b = 0; b < nb; b++) {                                                                               \
        if (!SIMPLE(type) && b % 8 == 0) /* a K-quant's super-block scales, decoded once at its first block */   \
            for (int r = 0; r < n; r++) super_block_scales(w + r * stride, type, b / 8, kscale[r], koffset[r]);  \
        const __m256i x0 = _mm256_loadu_si256((const __m256i *)(x.q + b * QK));                                  \
        const __m256i x1 = _mm256_loadu_si256((const __m256i *)(x.q + b * QK + QH));                             \
        const float xd = x.d[b], xs = x.s[b];                                                                    \
        const __m128 xds = _mm_setr_ps(xd, xs, 0.0f, 0.0f);                                                      \
        for (int r = 0; r < n; r++) {                                                                            \
            __m256i lo, hi;                                                                                      \
            if (SIMPLE(type)) {                                                                                  \
                const uint8_t *blk = w + r * stride + b * SIMPLE_BYTES[type];                                           \
                int32_t fields;                                                                                  \
                memcpy(&fields, blk, 4);                                                                         \
                /* (d, m) for Q4_1/Q5_1; elsewhere lane 1 is the next bytes, never read */                      \
                const __m128 scaled = _mm_mul_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(fields)), xds);                  \
                const block_view v = simple_view(blk, type);                                                     \
                weights16(&v, type, &lo, &hi);                                                                   \
                const __m256i ints = MADD(MADD(zero, lo, x0), hi, x1);                                           \
                acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ints), _mm256_broadcastss_ps(scaled), acc[r]);       \
                if (HAS_OFFSET(type)) off[r] = _mm_add_ps(off[r], scaled);                                              \
                continue;                                                                                        \
            }                                                                                                    \
            const int j = b % 8;                                                                                 \
            const block_view v = k_view(w + r * stride, type, b);                                                \
            weights16(&v, type, &lo, &hi);                                                                       \
            if (TWO_SCALES(type)) {                                                                              \
                acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(MADD(zero, lo, x0)), _mm256_set1_ps(kscale[r][2 * j] * xd), acc[r]); \
                acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(MADD(zero, hi, x1)), _mm256_set1_ps(kscale[r][2 * j + 1] * xd), acc[r]); \
            } else {                                                                                             \
                const __m256i ints = MADD(MADD(zero, lo, x0), hi, x1);                                           \
                acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ints), _mm256_set1_ps(kscale[r][2 * j] * xd), acc[r]); \
            }                                                                                                    \
            if (HAS_OFFSET(type)) off[r] = _mm_add_ps(off[r], _mm_setr_ps(0.0f, koffset[r][j] * xs, 0.0f, 0.0f)); \
        }                                                                                                        \
    }                                                                                                            \
    for (int r = 0; r < n; r++) y[r] = hsum256(acc[r]) + _mm_cvtss_f32(_mm_shuffle_ps(off[r], off[r], 1));

AVX2 INLINE void rows_avx2_of(const uint8_t *w, size_t stride, const int type, const int n, int nb, qvec x, float *y) {
    ROWS_BODY(MADD_AVX2)
}

VNNI INLINE void rows_vnni_of(const uint8_t *w, size_t stride, const int type, const int n, int nb, qvec x, float *y) {
    ROWS_BODY(MADD_VNNI)
}

/* One loop per type and row count, both constants in it: the per-block branches fold away. */
#define ROWS_FOR_TYPE(FN, T)                                                                     \
    case T:                                                                                      \
        if (n == ROWS) FN(w, stride, T, ROWS, nb, x, y);                                         \
        else                                                                                     \
            for (int r = 0; r < n; r++) FN(w + r * stride, stride, T, 1, nb, x, y + r);          \
        return;
#define ROWS_DISPATCH(FN)                                                                        \
    switch (type) {                                                                              \
        ROWS_FOR_TYPE(FN, T_Q4_0) ROWS_FOR_TYPE(FN, T_Q4_1) ROWS_FOR_TYPE(FN, T_Q5_0)            \
        ROWS_FOR_TYPE(FN, T_Q5_1) ROWS_FOR_TYPE(FN, T_Q8_0) ROWS_FOR_TYPE(FN, T_Q4_K)            \
        ROWS_FOR_TYPE(FN, T_Q5_K) ROWS_FOR_TYPE(FN, T_Q6_K)                                      \
    }

AVX2 static void rows_avx2(const uint8_t *w, size_t stride, int type, int n, int nb, qvec x, float *y) {
    ROWS_DISPATCH(rows_avx2_of)
}

VNNI static void rows_vnni(const uint8_t *w, size_t stride, int type, int n, int nb, qvec x, float *y) {
    ROWS_DISPATCH(rows_vnni_of)
}

typedef void (*rows_fn)(const uint8_t *, size_t, int, int, int, qvec, float *);

static rows_fn rows_for(int isa) {
    return isa == ISA_AVX512VNNI ? rows_vnni : isa == ISA_AVX2 ? rows_avx2 : rows_generic;
}

/* y = W x for the rows this thread takes (call inside a parallel region), ROWS at a time. */
static void gemv(const qmat *m, qvec x, float *y, rows_fn rows) {
    const int nb = m->cols / QK, groups = (m->rows + ROWS - 1) / ROWS;
    const size_t stride = row_bytes_of(m->type, m->cols);
    /* no barrier here: matrices of one input (Q, K, V; gate, up) run back to back, the caller waits */
#pragma omp for schedule(static) nowait
    for (int g = 0; g < groups; g++) {
        const int first = g * ROWS, n = m->rows - first < ROWS ? m->rows - first : ROWS;
        rows(m->w + (size_t)first * stride, stride, m->type, n, nb, x, y + first);
    }
}

/* ---- the output head ------------------------------------------------------------------------ */
/* Over int8 rows the fast model already keeps, read in place (no second copy): its int8 head (a
 * scale per row) or a tied embedding's Q8_0 rows (a scale per 32, the GGUF's values exactly). */

/* Row r's scale of block b (per row: 1, the row's own scale applied once after the sum). */
static inline float head_block_scale(const q8_rows *m, int r, int b) {
    return m->per_row ? 1.0f : m->d[(size_t)r * (m->cols / QK) + b];
}

static inline float head_row_scale(const q8_rows *m, int r) { return m->per_row ? m->d[r] : 1.0f; }

static void head_rows_generic(const q8_rows *m, int first, int n, qvec x, float *y) {
    const int nb = m->cols / QK;
    for (int r = first; r < first + n; r++) {
        float sum = 0.0f;
        for (int b = 0; b < nb; b++) {
            const int8_t *w = m->q + (size_t)r * m->cols + b * QK;
            int acc = 0;
            for (int i = 0; i < QK; i++) acc += w[i] * x.q[b * QK + i];
            sum += head_block_scale(m, r, b) * x.d[b] * (float)acc;
        }
        y[r] = sum * head_row_scale(m, r);
    }
}

#define HEAD_ROWS_BODY(MADD)                                                                                   \
    const int nb = m->cols / QK;                                                                               \
    for (int r = first; r < first + n; r++) {                                                                  \
        const int8_t *w = m->q + (size_t)r * m->cols;                                                          \
        __m256 acc = _mm256_setzero_ps();                                                                      \
        for (int b = 0; b < nb; b++) {                                                                         \
            const __m256i lo = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(w + b * QK)));           \
            const __m256i hi = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(w + b * QK + QH)));      \
            const __m256i x0 = _mm256_loadu_si256((const __m256i *)(x.q + b * QK));                            \
            const __m256i x1 = _mm256_loadu_si256((const __m256i *)(x.q + b * QK + QH));                       \
            const __m256i ints = MADD(MADD(_mm256_setzero_si256(), lo, x0), hi, x1);                           \
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ints), _mm256_set1_ps(head_block_scale(m, r, b) * x.d[b]), acc); \
        }                                                                                                      \
        y[r] = hsum256(acc) * head_row_scale(m, r);                                                            \
    }

AVX2 static void head_rows_avx2(const q8_rows *m, int first, int n, qvec x, float *y) { HEAD_ROWS_BODY(MADD_AVX2) }
VNNI static void head_rows_vnni(const q8_rows *m, int first, int n, qvec x, float *y) { HEAD_ROWS_BODY(MADD_VNNI) }

typedef void (*head_fn)(const q8_rows *, int, int, qvec, float *);

static head_fn head_for(int isa) {
    return isa == ISA_AVX512VNNI ? head_rows_vnni : isa == ISA_AVX2 ? head_rows_avx2 : head_rows_generic;
}

/* logits = head x for the rows this thread takes, in chunks (a vocabulary is tens of thousands). */
static void gemv_head(const q8_rows *m, qvec x, float *y, head_fn rows) {
    const int chunk = 64, chunks = (m->rows + chunk - 1) / chunk;
#pragma omp for schedule(static)
    for (int c = 0; c < chunks; c++) {
        const int first = c * chunk;
        rows(m, first, m->rows - first < chunk ? m->rows - first : chunk, x, y);
    }
}

/* ---- attention ------------------------------------------------------------------------------ */

/* One query head over n cached positions (bf16 K and V rows of d values). */
static void attend_generic(const float *q, const uint16_t *k, const uint16_t *v, int n, int d, float *scores, float *out) {
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

AVX2 INLINE __m256 bf16x8(const uint16_t *p) { /* 8 bf16 as fp32: exact */
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
}

/* The same with 8 lanes; d a multiple of 8 (else the portable loop). */
AVX2 static void attend_avx2(const float *q, const uint16_t *k, const uint16_t *v, int n, int d, float *scores, float *out) {
    if (d % 8) {
        attend_generic(q, k, v, n, d, scores, out);
        return;
    }
    const float scale = 1.0f / sqrtf((float)d);
    float best = -INFINITY;
    for (int t = 0; t < n; t++) {
        const uint16_t *kt = k + (size_t)t * d;
        __m256 s = _mm256_setzero_ps();
        for (int i = 0; i < d; i += 8) s = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), bf16x8(kt + i), s);
        scores[t] = hsum256(s) * scale;
        best = fmaxf(best, scores[t]);
    }
    float total = 0.0f;
    for (int t = 0; t < n; t++) total += (scores[t] = expf(scores[t] - best));
    for (int i = 0; i < d; i++) out[i] = 0.0f;
    for (int t = 0; t < n; t++) {
        const __m256 p = _mm256_set1_ps(scores[t] / total);
        const uint16_t *vt = v + (size_t)t * d;
        for (int i = 0; i < d; i += 8)
            _mm256_storeu_ps(out + i, _mm256_fmadd_ps(p, bf16x8(vt + i), _mm256_loadu_ps(out + i)));
    }
}

/* ---- several tokens (prefill) ----------------------------------------------------------------- */
/* Y[t][r] = W[r] . X[t]: each weight block, unpacked once, serves up to TOKENS tokens. Token t's
 * activation is x.q + t * cols, its scales x.d / x.s + t * (cols / 32). */
#define TOKENS 4
#define PANEL 16 /* rows: 16 x 1536 columns of Q4_1 are ~15 KB */

static void tile_generic(const uint8_t *row, int type, int n, int nb, qvec x, float *y, int ldy) {
    for (int t = 0; t < n; t++) {
        const qvec xt = {x.q + (size_t)t * nb * QK, x.d + (size_t)t * nb, x.s + (size_t)t * nb};
        y[(size_t)t * ldy] = dot_generic(row, type, nb, xt);
    }
}

#define TILE_BODY(MADD)                                                                                          \
    __m256 acc[TOKENS];                                                                                          \
    float off[TOKENS], kscale[16], koffset[8];                                                                   \
    for (int t = 0; t < n; t++) {                                                                                \
        acc[t] = _mm256_setzero_ps();                                                                            \
        off[t] = 0.0f;                                                                                           \
    }                                                                                                            \
    const __m256i zero = _mm256_setzero_si256();                                                                 \
    for (int b = 0; b < nb; b++) {                                                                               \
        __m256i lo, hi;                                                                                          \
        float scale0, scale1, offset = 0.0f;                                                                     \
        if (SIMPLE(type)) {                                                                                      \
            const uint8_t *blk = row + b * SIMPLE_BYTES[type];                                                          \
            const block_view v = simple_view(blk, type);                                                         \
            weights16(&v, type, &lo, &hi);                                                                       \
            scale0 = scale1 = half_f16c(blk);                                                                    \
            if (HAS_OFFSET(type)) offset = half_f16c(blk + 2);                                                          \
        } else {                                                                                                 \
            const int j = b % 8;                                                                                 \
            if (j == 0) super_block_scales(row, type, b / 8, kscale, koffset);                                   \
            const block_view v = k_view(row, type, b);                                                           \
            weights16(&v, type, &lo, &hi);                                                                       \
            scale0 = kscale[2 * j], scale1 = kscale[2 * j + 1], offset = HAS_OFFSET(type) ? koffset[j] : 0.0f;   \
        }                                                                                                        \
        for (int t = 0; t < n; t++) {                                                                            \
            const int16_t *xq = x.q + ((size_t)t * nb + b) * QK;                                                 \
            const __m256i x0 = _mm256_loadu_si256((const __m256i *)xq);                                          \
            const __m256i x1 = _mm256_loadu_si256((const __m256i *)(xq + QH));                                   \
            const float xd = x.d[(size_t)t * nb + b];                                                            \
            if (TWO_SCALES(type)) {                                                                              \
                acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(MADD(zero, lo, x0)), _mm256_set1_ps(scale0 * xd), acc[t]); \
                acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(MADD(zero, hi, x1)), _mm256_set1_ps(scale1 * xd), acc[t]); \
            } else {                                                                                             \
                const __m256i ints = MADD(MADD(zero, lo, x0), hi, x1);                                           \
                acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ints), _mm256_set1_ps(scale0 * xd), acc[t]);         \
            }                                                                                                    \
            if (HAS_OFFSET(type)) off[t] += offset * x.s[(size_t)t * nb + b];                                    \
        }                                                                                                        \
    }                                                                                                            \
    for (int t = 0; t < n; t++) y[(size_t)t * ldy] = hsum256(acc[t]) + off[t];

AVX2 INLINE void tile_avx2_of(const uint8_t *row, const int type, const int n, int nb, qvec x, float *y, int ldy) {
    TILE_BODY(MADD_AVX2)
}

VNNI INLINE void tile_vnni_of(const uint8_t *row, const int type, const int n, int nb, qvec x, float *y, int ldy) {
    TILE_BODY(MADD_VNNI)
}

#define TILE_FOR_TYPE(FN, T)                                                                     \
    case T:                                                                                      \
        if (n == TOKENS) FN(row, T, TOKENS, nb, x, y, ldy);                                      \
        else                                                                                     \
            for (int t = 0; t < n; t++) {                                                        \
                const qvec xt = {x.q + (size_t)t * nb * QK, x.d + (size_t)t * nb, x.s + (size_t)t * nb}; \
                FN(row, T, 1, nb, xt, y + (size_t)t * ldy, ldy);                                 \
            }                                                                                    \
        return;
#define TILE_DISPATCH(FN)                                                                        \
    switch (type) {                                                                              \
        TILE_FOR_TYPE(FN, T_Q4_0) TILE_FOR_TYPE(FN, T_Q4_1) TILE_FOR_TYPE(FN, T_Q5_0)            \
        TILE_FOR_TYPE(FN, T_Q5_1) TILE_FOR_TYPE(FN, T_Q8_0) TILE_FOR_TYPE(FN, T_Q4_K)            \
        TILE_FOR_TYPE(FN, T_Q5_K) TILE_FOR_TYPE(FN, T_Q6_K)                                      \
    }

AVX2 static void tile_avx2(const uint8_t *row, int type, int n, int nb, qvec x, float *y, int ldy) {
    TILE_DISPATCH(tile_avx2_of)
}

VNNI static void tile_vnni(const uint8_t *row, int type, int n, int nb, qvec x, float *y, int ldy) {
    TILE_DISPATCH(tile_vnni_of)
}

typedef void (*tile_fn)(const uint8_t *, int, int, int, qvec, float *, int);

static tile_fn tile_for(int isa) {
    return isa == ISA_AVX512VNNI ? tile_vnni : isa == ISA_AVX2 ? tile_avx2 : tile_generic;
}

/* The kernels of one instruction set. */
typedef struct {
    rows_fn rows;
    tile_fn tile;
} kernel_set;

/* Y[t][r] = W[r] . X[t] for T tokens (y: T rows of ldy floats), rows split across the threads;
 * one token goes ROWS rows at a time instead. No barrier (see gemv). */
static void matmul(const qmat *m, qvec x, int T, float *y, int ldy, kernel_set k) {
    if (T == 1) {
        gemv(m, x, y, k.rows);
        return;
    }
    const int nb = m->cols / QK, panels = (m->rows + PANEL - 1) / PANEL;
    const size_t stride = row_bytes_of(m->type, m->cols);
    /* a panel of rows stays in cache while every token passes over it, a few tokens at a time */
#pragma omp for schedule(static) nowait
    for (int p = 0; p < panels; p++) {
        const int first = p * PANEL, last = first + PANEL < m->rows ? first + PANEL : m->rows;
        for (int t0 = 0; t0 < T; t0 += TOKENS) {
            const qvec xt = {x.q + (size_t)t0 * m->cols, x.d + (size_t)t0 * nb, x.s + (size_t)t0 * nb};
            const int n = T - t0 < TOKENS ? T - t0 : TOKENS;
            for (int r = first; r < last; r++)
                k.tile(m->w + (size_t)r * stride, m->type, n, nb, xt, y + (size_t)t0 * ldy + r, ldy);
        }
    }
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

static int max3(int a, int b, int c) { return a > b ? (a > c ? a : c) : (b > c ? b : c); }

typedef void (*attend_fn)(const float *, const uint16_t *, const uint16_t *, int, int, float *, float *);

/* T tokens through every layer, at positions pos..pos + T - 1 after the cached ones. x: [T, dim]
 * fp32, the tokens' input embeddings in, their final-normed hidden states out. logits: NULL, or
 * [logit_rows, vocab] for the last logit_rows tokens (through the head: m->head.q set).
 * k_cache / v_cache: bf16 [layers, kv_heads, capacity, head_dim]; the tokens' K/V are written and
 * each token attends to positions 0..its own. cos / sin: [T, head_dim] fp32, the tokens' rows. */
int nd_forward(const model_weights *m, float *x, int T, float *logits, int logit_rows, int pos, uint16_t *k_cache,
               uint16_t *v_cache, int capacity, const float *cos, const float *sin, int nthreads, int isa) {
    const int D = m->head_dim, H = m->n_heads, KV = m->n_kv_heads, G = H / KV, dim = m->dim, hidden = m->hidden;
    const int q_rows = H * D, kv_rows = KV * D, qkv_rows = q_rows + 2 * kv_rows, widest = max3(dim, hidden, q_rows);
    if (D > 512 || T < 1 || pos + T > capacity || logit_rows < 0 || logit_rows > T || (logits && !m->head.q)) return -1;
    const size_t n_max = (size_t)pos + T;
    float *h = malloc(sizeof(float) * T * widest);
    float *qkv = malloc(sizeof(float) * T * qkv_rows);
    float *attn = malloc(sizeof(float) * T * q_rows);
    float *proj = malloc(sizeof(float) * T * dim);
    float *gu = malloc(sizeof(float) * T * 2 * hidden);
    float *scores = malloc(sizeof(float) * (size_t)T * H * n_max);
    int16_t *xq = malloc(sizeof(int16_t) * T * widest);
    float *xd = malloc(sizeof(float) * T * (widest / QK)), *xs = malloc(sizeof(float) * T * (widest / QK));
    if (!h || !qkv || !attn || !proj || !gu || !scores || !xq || !xd || !xs) {
        free(h); free(qkv); free(attn); free(proj); free(gu); free(scores); free(xq); free(xd); free(xs);
        return -2;
    }
    const qvec act = {xq, xd, xs};
    const kernel_set k = {rows_for(isa), tile_for(isa)};
    const attend_fn attend = isa == ISA_GENERIC ? attend_generic : attend_avx2;
    const size_t layer_stride = (size_t)KV * capacity * D;
    /* the matmul inputs of T tokens, each quantized as one activation row of `cols` */
#define QUANTIZE_ROWS(src, ld, cols)                                                                                   \
    _Pragma("omp for schedule(static)") for (int t = 0; t < T; t++) {                                                  \
        const qvec at = {xq + (size_t)t * (cols), xd + (size_t)t * ((cols) / QK), xs + (size_t)t * ((cols) / QK)};      \
        quantize_row((src) + (size_t)t * (ld), cols, at);                                                              \
    }

#pragma omp parallel num_threads(nthreads)
    {
        for (int l = 0; l < m->n_layers; l++) {
            const layer_weights *lw = &m->layers[l];
            uint16_t *kl = k_cache + l * layer_stride, *vl = v_cache + l * layer_stride;
#pragma omp for schedule(static)
            for (int t = 0; t < T; t++) rms_norm(x + (size_t)t * dim, lw->attn_norm, dim, m->eps, h + (size_t)t * dim);
            QUANTIZE_ROWS(h, dim, dim)
            matmul(&lw->q, act, T, qkv, qkv_rows, k);
            matmul(&lw->k, act, T, qkv + q_rows, qkv_rows, k);
            matmul(&lw->v, act, T, qkv + q_rows + kv_rows, qkv_rows, k);
#pragma omp barrier
#pragma omp for schedule(static)
            for (int t = 0; t < T; t++) {
                float *row = qkv + (size_t)t * qkv_rows;
                if (lw->qkv_bias)
                    for (int i = 0; i < qkv_rows; i++) row[i] += lw->qkv_bias[i];
                if (lw->q_norm)
                    for (int hh = 0; hh < H + KV; hh++)
                        rms_norm(row + hh * D, hh < H ? lw->q_norm : lw->k_norm, D, m->eps, row + hh * D);
                for (int hh = 0; hh < H + KV; hh++) rope(row + hh * D, cos + (size_t)t * D, sin + (size_t)t * D, D);
                for (int kh = 0; kh < KV; kh++) {
                    const float *kv_k = row + q_rows + kh * D, *kv_v = row + q_rows + kv_rows + kh * D;
                    const size_t at = ((size_t)kh * capacity + pos + t) * D;
                    for (int i = 0; i < D; i++) {
                        kl[at + i] = fp32_to_bf16(kv_k[i]);
                        vl[at + i] = fp32_to_bf16(kv_v[i]);
                    }
                }
            }
#pragma omp for schedule(dynamic)
            for (int th = 0; th < T * H; th++) { /* token t's head hh sees positions 0..pos + t */
                const int t = th / H, hh = th % H;
                const size_t base = (size_t)(hh / G) * capacity * D;
                attend(qkv + (size_t)t * qkv_rows + hh * D, kl + base, vl + base, pos + t + 1, D,
                       scores + (size_t)th * n_max, attn + (size_t)t * q_rows + hh * D);
            }
            QUANTIZE_ROWS(attn, q_rows, q_rows)
            matmul(&lw->o, act, T, proj, dim, k);
#pragma omp barrier
#pragma omp for schedule(static)
            for (int t = 0; t < T; t++) {
                float *xt = x + (size_t)t * dim;
                for (int i = 0; i < dim; i++) xt[i] += proj[(size_t)t * dim + i];
                rms_norm(xt, lw->ffn_norm, dim, m->eps, h + (size_t)t * dim);
            }
            QUANTIZE_ROWS(h, dim, dim)
            matmul(&lw->gate, act, T, gu, 2 * hidden, k);
            matmul(&lw->up, act, T, gu + hidden, 2 * hidden, k);
#pragma omp barrier
#pragma omp for schedule(static)
            for (int i = 0; i < T * hidden; i++) {
                const int t = i / hidden, j = i % hidden;
                const float g = gu[(size_t)t * 2 * hidden + j];
                h[i] = g / (1.0f + expf(-g)) * gu[(size_t)t * 2 * hidden + hidden + j];
            }
            QUANTIZE_ROWS(h, hidden, hidden)
            matmul(&lw->down, act, T, proj, dim, k);
#pragma omp barrier
#pragma omp for schedule(static)
            for (int i = 0; i < T * dim; i++) x[i] += proj[i];
        }
#pragma omp for schedule(static)
        for (int t = 0; t < T; t++) {
            rms_norm(x + (size_t)t * dim, m->final_norm, dim, m->eps, h + (size_t)t * dim);
            memcpy(x + (size_t)t * dim, h + (size_t)t * dim, sizeof(float) * dim);
        }
        if (logits) {
            const int first = T - logit_rows;
            QUANTIZE_ROWS(x + (size_t)first * dim, dim, dim)
            for (int t = 0; t < logit_rows; t++) {
                const qvec at = {xq + (size_t)t * dim, xd + (size_t)t * (dim / QK), xs + (size_t)t * (dim / QK)};
                gemv_head(&m->head, at, logits + (size_t)t * m->head.rows, head_for(isa));
            }
        }
    }
#undef QUANTIZE_ROWS
    free(h); free(qkv); free(attn); free(proj); free(gu); free(scores); free(xq); free(xd); free(xs);
    return 0;
}

/* x quantized as the decoder step does, into buffers released with release(); 0 when allocated. */
static int quantized(const float *x, int n, qvec *out) {
    out->q = malloc(sizeof(int16_t) * n);
    out->d = malloc(sizeof(float) * (n / QK));
    out->s = malloc(sizeof(float) * (n / QK));
    if (!out->q || !out->d || !out->s) return -2;
    quantize_row(x, n, *out);
    return 0;
}

static void release(qvec v) {
    free(v.q); free(v.d); free(v.s);
}

/* y = W x for one matrix (tests), as in the decoder step. */
int nd_gemv(const qmat *m, const float *x, float *y, int nthreads, int isa) {
    qvec act;
    const int rc = quantized(x, m->cols, &act);
    const rows_fn rows = rows_for(isa);
    if (rc == 0) {
#pragma omp parallel num_threads(nthreads)
        gemv(m, act, y, rows);
    }
    release(act);
    return rc;
}

/* logits = head x (tests), as the decoder step's last part. */
int nd_head(const q8_rows *m, const float *x, float *y, int nthreads, int isa) {
    qvec act;
    const int rc = quantized(x, m->cols, &act);
    const head_fn rows = head_for(isa);
    if (rc == 0) {
#pragma omp parallel num_threads(nthreads)
        gemv_head(m, act, y, rows);
    }
    release(act);
    return rc;
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
