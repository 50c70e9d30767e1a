/* Native one-token decode for the fast engine: GEMV kernels over GGUF's own quantized blocks
 * (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K) with an int16-quantized activation (a scale per
 * 32 values), and a whole decoder step (every layer: RMSNorm, QKV, RoPE, KV write, attention, O,
 * SiLU MLP, then the final norm and the output head) in one call, so a token costs one dispatch
 * instead of ~1300 torch ops.
 *
 * Weights stay the file's exact block bytes; the activation is quantized once per matmul. Each
 * kernel exists per instruction set (AVX-512 VNNI, AVX2, portable C), chosen at run time. The
 * threads (OpenMP's, the runtime torch already loaded) claim a step's work in chunks, with no
 * barrier between its phases (see run_phases).
 */
#define _POSIX_C_SOURCE 200809L /* sched_yield */
#include <immintrin.h>
#include <sched.h>
#include <stdatomic.h>
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
    qmat output;  /* the file's own head in its blocks (exact); w NULL: the int8 rows below */
    q8_rows head; /* q NULL too: no logits here (the caller's head reads the normed state) */
} model_weights;

/* An activation quantized to int16 in blocks of 32 (one weight block): q, the scale d[b] of block b
 * and s[b] = d[b] * sum(q) over it (for the offsets of the types with a minimum). About 15 bits:
 * one int8 pass (llama.cpp's Q8_1 form) measured at the quality guard's limit, and int16 costs
 * nothing more on AVX2 (vpmaddwd instead of vpmaddubsw + vpmaddwd). */
#define QH (QK / 2)
typedef struct {
    int16_t *q;
    float *d, *s;
    uint8_t *b; /* NULL, or (the VNNI path) each block's q as bytes for vpdpbusd: see split_bytes */
} qvec;

/* Bytes of one 256-weight super-block of a K-quant. */
static inline size_t super_block_bytes(int type) { return type == T_Q4_K ? 144 : type == T_Q5_K ? 176 : 210; }

static size_t row_bytes_of(int type, int cols) {
    switch (type) {
    case T_Q4_0: return (size_t)cols / QK * 18;
    case T_Q4_1: return (size_t)cols / QK * 20;
    case T_Q5_0: return (size_t)cols / QK * 22;
    case T_Q5_1: return (size_t)cols / QK * 24;
    case T_Q4_K: case T_Q5_K: case T_Q6_K: return (size_t)cols / QK_K * super_block_bytes(type);
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
#define SIMPLE(type) ((type) == T_Q4_0 || (type) == T_Q4_1 || (type) == T_Q5_0 || (type) == T_Q5_1 || (type) == T_Q8_0)

INLINE void k4_scale_min(int j, const uint8_t *sm, int *sc, int *mn) {
    if (j < 4) {
        *sc = sm[j] & 63;
        *mn = sm[j + 4] & 63;
    } else {
        *sc = (sm[j + 4] & 0x0f) | ((sm[j - 4] >> 6) << 4);
        *mn = (sm[j + 4] >> 4) | ((sm[j] >> 6) << 4);
    }
}

/* The kernels' layout of the simple types (weights.py writes it): rows in groups of ROWS, and in a
 * group each block holds its ROWS rows' fields (fp16 d, and m for Q4_1/Q5_1) one after another, then
 * the rest of their blocks (Q5's fifth bits, the integers) in the same order, so that a GEMV loads
 * a group's scales with one vector load (per row they cost ~10% of a Q4_0/Q4_1/Q8_0 block's time).
 * The same bytes, moved; rows after the last whole group keep the file's layout. The K-quants keep
 * it too. */
#define ROWS 4
#define FIELD_BYTES(type) (HAS_OFFSET(type) ? 4 : 2)
#define CENTRE(type) ((type) == T_Q4_0 ? 8 : (type) == T_Q5_0 ? 16 : 0) /* of the simple types */

/* Block b of a row of a simple type: in a group at `base` as its row `lane`, or (lane < 0) in the
 * file's layout in the row at `base`. fields: its d (and m); blk: where the block would start in
 * the file's layout, for simple_view. */
typedef struct {
    const uint8_t *fields, *blk;
} simple_at;

INLINE simple_at simple_block(const uint8_t *base, int lane, int type, int b) {
    const size_t bytes = SIMPLE_BYTES[type];
    if (lane < 0) return (simple_at){base + b * bytes, base + b * bytes};
    const size_t fields = FIELD_BYTES(type);
    const uint8_t *group = base + b * ROWS * bytes;
    return (simple_at){group + lane * fields, group + ROWS * fields + lane * (bytes - fields) - fields};
}

/* A simple type's block at blk (file layout): where its bits are (its fp16 fields are read by the caller). */
INLINE block_view simple_view(const uint8_t *blk, int type) {
    const int has_min = type == T_Q4_1 || type == T_Q5_1, five = type == T_Q5_0 || type == T_Q5_1;
    block_view v = {0};
    v.shift = -1;
    v.qh = five ? blk + 2 + 2 * has_min : NULL;
    v.q = blk + 2 + 2 * has_min + 4 * five;
    v.centre = CENTRE(type);
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
        const uint8_t *sb = row + (size_t)(b / 8) * super_block_bytes(type);                                                \
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
        const uint8_t *sb = row + (size_t)(b / 8) * super_block_bytes(type);                                                \
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
    const simple_at at = simple_block(row, lane, type, b);                                                                  \
    v = simple_view(at.blk, type);                                                                                          \
    v.scale[0] = v.scale[1] = HALF(at.fields);                                                                              \
    v.offset = HAS_OFFSET(type) ? HALF(at.fields + 2) : 0.0f;                                                               \
    return v;                                                                                                               \
}

/* Block b of a row (a simple type's as simple_block's base and lane; a K-quant's: lane < 0). */
INLINE block_view view_of(const uint8_t *row, int lane, int type, int b) VIEW_OF_BODY(half_at)

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
/* A GEMV takes a group of ROWS rows at a time: the activation's block is loaded once for all of them. */
/* Rows are streamed from memory once a token: each group prefetches the one PF groups after it,
 * a share per block. Without it a Q8_0 head of 49152 x 576 read at 6.7 GB/s on one thread of the
 * AMD EPYC (Zen 3), with it at 22 GB/s (Q4_1: 10 -> 12.7; one group ahead: 2.25 ns a block against
 * 1.55 for two, four or eight about as two). On the AMD EPYC (Zen 4), which runs the VNNI kernels,
 * one group ahead beat two in 7 of 10 alternated runs of 2-thread steps by 4-15% (3 even): so the
 * distance is per instruction set, as measured on the CPU each was tuned on. */
#define PF_GROUPS_AVX2 2
#define PF_GROUPS_VNNI 1
/* The VNNI byte kernel of Q4_0/Q4_1 (q4_group_vnni_of) runs through a group in half the time: on
 * the AMD EPYC (Zen 5) two groups ahead beat one in 7 of 8 alternated rounds, twice in a row
 * (+5-8%); 4, 8 and 16 about as 2. */
#define PF_GROUPS_Q4_VNNI 2

static float dot_generic(const uint8_t *row, int lane, int type, int nb, qvec x) {
    float sum = 0.0f;
    for (int b = 0; b < nb; b++) {
        const block_view v = view_of(row, lane, type, b);
        const int16_t *xq = x.q + b * QK;
        int acc[2] = {0, 0}; /* |each| <= 16 x 127 x 32767: int32 */
        for (int i = 0; i < QK; i++) acc[i / QH] += (integer_at(&v, type, i) - v.centre) * xq[i];
        const float ints = TWO_SCALES(type) ? v.scale[0] * (float)acc[0] + v.scale[1] * (float)acc[1]
                                            : v.scale[0] * (float)(acc[0] + acc[1]);
        sum += x.d[b] * ints + v.offset * x.s[b];
    }
    return sum;
}

/* n rows at w: a whole group (n == ROWS) or rows after the last one, in the file's layout. */
static void rows_generic(const uint8_t *w, size_t stride, int type, int n, int nb, qvec x, float *y) {
    for (int r = 0; r < n; r++)
        y[r] = SIMPLE(type) && n == ROWS ? dot_generic(w, r, type, nb, x) : dot_generic(w + r * stride, -1, type, nb, x);
}

#define AVX2 __attribute__((target("avx2,fma,f16c")))
#define VNNI __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))

AVX2 static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* quantize_row with 8 lanes: the same values bit for bit (cvtps2dq rounds to nearest even under
 * the default rounding mode, as lrintf does). A step quantizes ~100k values, serially in its
 * phases' tails, where the scalar loop cost ~5% of it. */
AVX2 static void quantize_row_avx2(const float *x, int n, qvec out) {
    const __m256 magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256i most = _mm256_set1_epi32(32767), least = _mm256_set1_epi32(-32767);
    for (int b = 0; b < n / QK; b++) {
        const float *xb = x + b * QK;
        __m256 v[4], top = _mm256_setzero_ps();
        for (int i = 0; i < 4; i++) top = _mm256_max_ps(top, _mm256_and_ps(v[i] = _mm256_loadu_ps(xb + 8 * i), magnitude));
        __m128 m = _mm_max_ps(_mm256_castps256_ps128(top), _mm256_extractf128_ps(top, 1));
        m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        const float amax = _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
        const float d = amax / 32767.0f, inv = d > 0.0f ? 1.0f / d : 0.0f;
        __m256i q[4], sum = _mm256_setzero_si256();
        for (int i = 0; i < 4; i++) {
            q[i] = _mm256_cvtps_epi32(_mm256_mul_ps(v[i], _mm256_set1_ps(inv)));
            q[i] = _mm256_min_epi32(_mm256_max_epi32(q[i], least), most);
            sum = _mm256_add_epi32(sum, q[i]);
        }
        /* packs works within 128-bit halves: (0 1 2 3) of its two inputs come out as 0 2 1 3 */
        _mm256_storeu_si256((__m256i *)(out.q + b * QK), _mm256_permute4x64_epi64(_mm256_packs_epi32(q[0], q[1]), 0xd8));
        _mm256_storeu_si256((__m256i *)(out.q + b * QK + QH), _mm256_permute4x64_epi64(_mm256_packs_epi32(q[2], q[3]), 0xd8));
        __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
        out.d[b] = d;
        out.s[b] = d * (float)_mm_cvtsi128_si32(s4);
    }
}

typedef void (*quantize_fn)(const float *, int, qvec);

/* The VNNI GEMV of Q4_0/Q4_1 multiplies bytes (vpdpbusd: unsigned x signed), so it takes each int16
 * q as q = 256 * hi + lo, hi = q >> 8 signed and lo = q & 255 unsigned: the same integer products,
 * exactly. Per block 64 bytes: hi of weights 0-15, hi of 16-31, lo of 0-15, lo of 16-31. */
AVX2 static void split_bytes(const int16_t *q, int n, uint8_t *out) {
    const __m256i low8 = _mm256_set1_epi16(0xff);
    for (int b = 0; b < n / QK; b++) {
        const __m256i x0 = _mm256_loadu_si256((const __m256i *)(q + b * QK));
        const __m256i x1 = _mm256_loadu_si256((const __m256i *)(q + b * QK + QH));
        /* packs works within 128-bit halves: (0 1 2 3) of its two inputs come out as 0 2 1 3 */
        const __m256i hi = _mm256_packs_epi16(_mm256_srai_epi16(x0, 8), _mm256_srai_epi16(x1, 8));
        const __m256i lo = _mm256_packus_epi16(_mm256_and_si256(x0, low8), _mm256_and_si256(x1, low8));
        _mm256_storeu_si256((__m256i *)(out + b * 64), _mm256_permute4x64_epi64(hi, 0xd8));
        _mm256_storeu_si256((__m256i *)(out + b * 64 + 32), _mm256_permute4x64_epi64(lo, 0xd8));
    }
}

AVX2 static void quantize_row_vnni(const float *x, int n, qvec out) {
    quantize_row_avx2(x, n, out);
    if (out.b) split_bytes(out.q, n, out.b);
}

static quantize_fn quantize_for(int isa) {
    return isa == ISA_GENERIC ? quantize_row : isa == ISA_AVX2 ? quantize_row_avx2 : quantize_row_vnni;
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
        const uint8_t *sb = row + (size_t)(b / 8) * super_block_bytes(type);
        const int n = j / 4, g = j % 4;
        v.q = sb + n * 64 + (g & 1) * 32;
        v.shift = g < 2 ? 0 : 4;
        v.qh = sb + 128 + n * 32;
        v.hshift = 2 * g;
        v.centre = 32;
        return v;
    }
    const int five = type == T_Q5_K;
    const uint8_t *sb = row + (size_t)(b / 8) * super_block_bytes(type);
    v.q = sb + 16 + 32 * five + 32 * (j / 2);
    v.qh = five ? sb + 16 : NULL;
    v.hshift = j;
    v.shift = 4 * (j & 1);
    return v;
}

/* Blocks j and j + 1 (j even) of a Q4_K/Q5_K super-block at sb, as weights16 gives them: they are the
 * low and the high nibbles of the same 32 bytes, read and widened once for both. */
AVX2 INLINE void k4_pair(const uint8_t *sb, int type, int j, __m256i *lo0, __m256i *hi0, __m256i *lo1, __m256i *hi1) {
    const int five = type == T_Q5_K;
    const uint8_t *q = sb + 16 + 32 * five + 32 * (j / 2);
    if (!five) {
        const __m256i a = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)q));
        const __m256i b = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(q + QH)));
        const __m256i low4 = _mm256_set1_epi16(0x0f);
        *lo0 = _mm256_and_si256(a, low4), *hi0 = _mm256_and_si256(b, low4);
        *lo1 = _mm256_srli_epi16(a, 4), *hi1 = _mm256_srli_epi16(b, 4);
        return;
    }
    const __m256i bytes = _mm256_loadu_si256((const __m256i *)q), high = _mm256_loadu_si256((const __m256i *)(sb + 16));
    const __m256i low4 = _mm256_set1_epi8(0x0f), one = _mm256_set1_epi8(1);
    const __m256i u0 = _mm256_or_si256(_mm256_and_si256(bytes, low4),
                                       _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(high, j), one), 4));
    const __m256i u1 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(bytes, 4), low4),
                                       _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(high, j + 1), one), 4));
    *lo0 = _mm256_cvtepu8_epi16(_mm256_castsi256_si128(u0)), *hi0 = _mm256_cvtepu8_epi16(_mm256_extracti128_si256(u0, 1));
    *lo1 = _mm256_cvtepu8_epi16(_mm256_castsi256_si128(u1)), *hi1 = _mm256_cvtepu8_epi16(_mm256_extracti128_si256(u1, 1));
}

/* Super-block `sb` of a K-quant row: the scale of each 16 weights and the offset of each block. */
AVX2 INLINE void super_block_scales(const uint8_t *row, int type, int sb, float *scale, float *offset) {
    if (type == T_Q6_K) {
        const uint8_t *at = row + (size_t)sb * super_block_bytes(type);
        const __m256 d = _mm256_set1_ps(half_f16c(at + 208));
        const __m128i sc = _mm_loadu_si128((const __m128i *)(at + 192)); /* 16 int8 */
        _mm256_storeu_ps(scale, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(sc))));
        _mm256_storeu_ps(scale + 8, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(sc, 8)))));
        return;
    }
    const uint8_t *at = row + (size_t)sb * super_block_bytes(type);
    /* the eight 6-bit scales and mins (k4_scale_min's) as bytes, four to a word: scales 0-3 are the
     * low 6 bits of bytes 0-3, scales 4-7 the low nibbles of bytes 8-11 with the top 2 bits of bytes
     * 0-3; mins alike from bytes 4-7 and the high nibbles of 8-11 */
    uint32_t u[3], six[4];
    memcpy(u, at + 4, 12);
    six[0] = u[0] & 0x3f3f3f3f;
    six[1] = (u[2] & 0x0f0f0f0f) | ((u[0] >> 6) & 0x03030303) << 4;
    six[2] = u[1] & 0x3f3f3f3f;
    six[3] = ((u[2] >> 4) & 0x0f0f0f0f) | ((u[1] >> 6) & 0x03030303) << 4;
    const __m256 scales = _mm256_mul_ps(_mm256_set1_ps(half_f16c(at)),
                                        _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)six))));
    const __m256 mins = _mm256_mul_ps(_mm256_set1_ps(-half_f16c(at + 2)),
                                      _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(six + 2)))));
    _mm256_storeu_ps(offset, mins);
    _mm256_storeu_ps(scale, _mm256_permutevar8x32_ps(scales, _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3)));
    _mm256_storeu_ps(scale + 8, _mm256_permutevar8x32_ps(scales, _mm256_setr_epi32(4, 4, 5, 5, 6, 6, 7, 7)));
}

/* Four rows' 8-lane int32 dots reduced in the integers: row r's in lanes r and r + 4 (the two
 * 128-bit halves), so a block takes one conversion and one multiply-add per token, not four. */
AVX2 INLINE __m256i group_dot(const __m256i ints[ROWS]) {
    return _mm256_hadd_epi32(_mm256_hadd_epi32(ints[0], ints[1]), _mm256_hadd_epi32(ints[2], ints[3]));
}

/* n (<= ROWS) rows, `stride` bytes apart, of one type, dotted with x into y: a whole group of a
 * simple type (its four rows' scales loaded and converted together, see simple_block), a row after
 * the last group (the file's layout, scales one row at a time), or K-quant rows (Q4_K/Q5_K two
 * blocks at a time, k4_pair; Q6_K through its block view), their super-block scales decoded once. */
#define ROWS_BODY(MADD, PF)                                                                                       \
    __m256 acc[ROWS];                                                                                            \
    __m128 off[ROWS]; /* rows after the last group, lane 1: the sum of m * s (lane 0 is not read) */           \
    __m256 group_off = _mm256_setzero_ps(); /* a group of Q4_1/Q5_1, lane 2r + 1: row r's sum of m * s */       \
    __m128 centre_off = _mm_setzero_ps(); /* a group of Q4_0/Q5_0, lane r: row r's sum of -centre * d * s */    \
    __m256 group_acc = _mm256_setzero_ps(); /* a group: row r's sum in lanes r and r + 4 (group_dot) */         \
    float kscale[ROWS][16], koffset[ROWS][8]; /* K-quants: the current super-block's, per 16 weights / per block */ \
    for (int r = 0; r < n; r++) {                                                                                \
        acc[r] = _mm256_setzero_ps();                                                                            \
        off[r] = _mm_setzero_ps();                                                                               \
    }                                                                                                            \
    const __m256i zero = _mm256_setzero_si256();                                                                 \
    const uint8_t *ahead = w + (size_t)(PF) * n * stride;                                                        \
    const size_t share = (size_t)n * stride / nb;                                                                \
    float koff[ROWS] = {0}; /* K-quants: the sum of offset * s */                                                \
    if (type == T_Q4_K || type == T_Q5_K) { /* blocks in pairs (k4_pair) */                                 \
        for (int b = 0; b < nb; b += 2) {                                                                        \
            for (size_t off = 0; off < 2 * share; off += 64) _mm_prefetch((const char *)ahead + b * share + off, _MM_HINT_T0); \
            if (b % 8 == 0)                                                                                      \
                for (int r = 0; r < n; r++) super_block_scales(w + r * stride, type, b / 8, kscale[r], koffset[r]); \
            const int j = b % 8;                                                                                 \
            const __m256i x0 = _mm256_loadu_si256((const __m256i *)(x.q + b * QK));                              \
            const __m256i x1 = _mm256_loadu_si256((const __m256i *)(x.q + b * QK + QH));                         \
            const __m256i x2 = _mm256_loadu_si256((const __m256i *)(x.q + (b + 1) * QK));                        \
            const __m256i x3 = _mm256_loadu_si256((const __m256i *)(x.q + (b + 1) * QK + QH));                   \
            for (int r = 0; r < n; r++) {                                                                        \
                __m256i lo0, hi0, lo1, hi1;                                                                      \
                k4_pair(w + r * stride + (size_t)(b / 8) * super_block_bytes(type), type, j, &lo0, &hi0, &lo1, &hi1); \
                acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(MADD(MADD(zero, lo0, x0), hi0, x1)),                 \
                                         _mm256_set1_ps(kscale[r][2 * j] * x.d[b]), acc[r]);                     \
                acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(MADD(MADD(zero, lo1, x2), hi1, x3)),                 \
                                         _mm256_set1_ps(kscale[r][2 * j + 2] * x.d[b + 1]), acc[r]);             \
                koff[r] += koffset[r][j] * x.s[b];                                                               \
                koff[r] += koffset[r][j + 1] * x.s[b + 1];                                                       \
            }                                                                                                    \
        }                                                                                                        \
    } else                                                                                                       \
    for (int b = 0; b < nb; b++) {                                                                               \
        for (size_t off = 0; off < share; off += 64) _mm_prefetch((const char *)ahead + b * share + off, _MM_HINT_T0); \
        if (!SIMPLE(type) && b % 8 == 0) /* a K-quant's super-block scales, decoded once at its first block */   \
            for (int r = 0; r < n; r++) super_block_scales(w + r * stride, type, b / 8, kscale[r], koffset[r]);  \
        const __m256i x0 = _mm256_loadu_si256((const __m256i *)(x.q + b * QK));                                  \
        const __m256i x1 = _mm256_loadu_si256((const __m256i *)(x.q + b * QK + QH));                             \
        const float xd = x.d[b], xs = x.s[b];                                                                    \
        const __m128 xds = _mm_setr_ps(xd, xs, 0.0f, 0.0f);                                                      \
        if (SIMPLE(type) && n == ROWS) { /* a group: its rows' fields, then their integers */                   \
            const uint8_t *group = w + (size_t)b * ROWS * SIMPLE_BYTES[type];                                    \
            __m256 scale8; /* row r's d * xd in lanes r and r + 4, as group_dot's sums */                        \
            if (HAS_OFFSET(type)) { /* (d, m) of 4 rows: 8 halves, scaled by (xd, xs) pairs */                  \
                const __m256 xds4 = _mm256_castpd_ps(_mm256_broadcastsd_pd(_mm_castps_pd(xds)));                 \
                const __m256 scaled = _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)group)), xds4); \
                group_off = _mm256_add_ps(group_off, scaled);                                                    \
                scale8 = _mm256_permutevar8x32_ps(scaled, _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6));            \
            } else { /* d of 4 rows; a centre is taken off as an offset: per group, not per row's integers */   \
                const __m128 d4 = _mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)group));                         \
                const __m128 s4 = _mm_mul_ps(d4, _mm_set1_ps(xd));                                               \
                scale8 = _mm256_set_m128(s4, s4);                                                                \
                if (CENTRE(type)) centre_off = _mm_fmadd_ps(d4, _mm_set1_ps(-(float)CENTRE(type) * xs), centre_off); \
            }                                                                                                    \
            __m256i ints[ROWS];                                                                                  \
            for (int r = 0; r < ROWS; r++) {                                                                     \
                __m256i lo, hi;                                                                                  \
                block_view v = simple_view(simple_block(w, r, type, b).blk, type);                               \
                v.centre = 0; /* in centre_off */                                                                \
                weights16(&v, type, &lo, &hi);                                                                   \
                ints[r] = MADD(MADD(zero, lo, x0), hi, x1);                                                      \
            }                                                                                                    \
            group_acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(group_dot(ints)), scale8, group_acc);                 \
            continue;                                                                                            \
        }                                                                                                        \
        for (int r = 0; r < n; r++) {                                                                            \
            __m256i lo, hi;                                                                                      \
            if (SIMPLE(type)) { /* a row after the last group: the file's layout */                             \
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
            if (HAS_OFFSET(type)) koff[r] += koffset[r][j] * xs;                                                 \
        }                                                                                                        \
    }                                                                                                            \
    float group_offs[8], centre_offs[4], group_sums[4];                                                          \
    _mm256_storeu_ps(group_offs, group_off);                                                                     \
    _mm_storeu_ps(centre_offs, centre_off);                                                                      \
    _mm_storeu_ps(group_sums, _mm_add_ps(_mm256_castps256_ps128(group_acc), _mm256_extractf128_ps(group_acc, 1))); \
    for (int r = 0; r < n; r++)                                                                                  \
        y[r] = (SIMPLE(type) && n == ROWS ? group_sums[r] : hsum256(acc[r])) + (SIMPLE(type) && n == ROWS ? (HAS_OFFSET(type) ? group_offs[2 * r + 1] : centre_offs[r])  \
                                                            : SIMPLE(type) ? _mm_cvtss_f32(_mm_shuffle_ps(off[r], off[r], 1)) : koff[r]);

AVX2 INLINE void rows_avx2_of(const uint8_t *w, size_t stride, const int type, const int n, int nb, qvec x, float *y) {
    ROWS_BODY(MADD_AVX2, PF_GROUPS_AVX2)
}

VNNI INLINE void rows_vnni_of(const uint8_t *w, size_t stride, const int type, const int n, int nb, qvec x, float *y) {
    ROWS_BODY(MADD_VNNI, PF_GROUPS_VNNI)
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

/* A group's block of Q4_0/Q4_1 integers (4 rows x 16 bytes at q): weights 0-15 of row r in bytes
 * 16r.. of *lo, weights 16-31 in *hi. */
VNNI INLINE void q4_group_nibbles(const uint8_t *q, __m512i *lo, __m512i *hi) {
    const __m512i low4 = _mm512_set1_epi8(0x0f), bytes = _mm512_loadu_si512((const void *)q);
    *lo = _mm512_and_si512(bytes, low4);
    *hi = _mm512_and_si512(_mm512_srli_epi16(bytes, 4), low4);
}

/* Their dots with an activation block's split bytes xb: row r's two halves (weights 0-7 and 16-23;
 * 8-15 and 24-31) in lanes 4r and 4r + 2, exact. */
VNNI INLINE __m512i q4_group_dots(__m512i lo, __m512i hi, const uint8_t *xb) {
    const __m512i zero = _mm512_setzero_si512();
    const __m512i hi0 = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)xb));
    const __m512i hi1 = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(xb + 16)));
    const __m512i lo0 = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(xb + 32)));
    const __m512i lo1 = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(xb + 48)));
    const __m512i high = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(zero, lo, hi0), hi, hi1); /* weights x signed */
    const __m512i low = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(zero, lo0, lo), lo1, hi);  /* unsigned x weights */
    const __m512i ints = _mm512_add_epi32(_mm512_slli_epi32(high, 8), low);
    return _mm512_add_epi32(ints, _mm512_shuffle_epi32(ints, _MM_PERM_CDAB));
}

/* A group of Q4_0/Q4_1 rows on 512-bit registers, bytes multiplied as bytes: one load takes the
 * group's 64 bytes of nibbles (16 a row, in 128-bit lane r), masks give the weights 0-15 and
 * 16-31 of all four rows, and four vpdpbusd against the activation's split bytes (split_bytes)
 * give their dots, in about half the vector instructions of the 16-bit form (widening, a
 * vpdpwssd per row and half, three hadds). The integers are the same, reduced to the same two
 * halves a row, so the floats are ROWS_BODY's group's, bit for bit (and so the tile's). */
VNNI INLINE void q4_group_vnni_of(const uint8_t *w, size_t stride, const int type, int nb, qvec x, float *y) {
    const size_t bytes = SIMPLE_BYTES[type], share = ROWS * bytes;
    const uint8_t *ahead = w + (size_t)PF_GROUPS_Q4_VNNI * ROWS * stride;
    const __m512i row_of_lane = _mm512_setr_epi32(0, 0, 0, 0, 2, 2, 2, 2, 4, 4, 4, 4, 6, 6, 6, 6); /* (d, m) pairs */
    const __m512i row_of_lane_d = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    __m512 acc = _mm512_setzero_ps();
    __m256 group_off = _mm256_setzero_ps(); /* Q4_1, lane 2r + 1: row r's sum of m * s */
    __m128 centre_off = _mm_setzero_ps();   /* Q4_0, lane r: row r's sum of -8 * d * s */
    for (int b = 0; b < nb; b++) {
        for (size_t off = 0; off < share; off += 64) _mm_prefetch((const char *)ahead + b * share + off, _MM_HINT_T0);
        const uint8_t *group = w + (size_t)b * share;
        const float xd = x.d[b], xs = x.s[b];
        __m512 scale; /* row r's d * xd in its 128-bit lane */
        if (type == T_Q4_1) {
            const __m256 xds4 = _mm256_castpd_ps(_mm256_broadcastsd_pd(_mm_castps_pd(_mm_setr_ps(xd, xs, 0.0f, 0.0f))));
            const __m256 scaled = _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)group)), xds4);
            group_off = _mm256_add_ps(group_off, scaled);
            scale = _mm512_permutexvar_ps(row_of_lane, _mm512_castps256_ps512(scaled));
        } else {
            const __m128 d4 = _mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)group));
            scale = _mm512_permutexvar_ps(row_of_lane_d, _mm512_castps128_ps512(_mm_mul_ps(d4, _mm_set1_ps(xd))));
            centre_off = _mm_fmadd_ps(d4, _mm_set1_ps(-8.0f * xs), centre_off);
        }
        __m512i lo, hi;
        q4_group_nibbles(group + ROWS * FIELD_BYTES(type), &lo, &hi);
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(q4_group_dots(lo, hi, x.b + (size_t)b * 64)), scale, acc);
    }
    float sums[16], group_offs[8], centre_offs[4];
    _mm512_storeu_ps(sums, acc);
    _mm256_storeu_ps(group_offs, group_off);
    _mm_storeu_ps(centre_offs, centre_off);
    for (int r = 0; r < ROWS; r++)
        y[r] = (sums[4 * r] + sums[4 * r + 2]) + (type == T_Q4_1 ? group_offs[2 * r + 1] : centre_offs[r]);
}

VNNI static void rows_vnni(const uint8_t *w, size_t stride, int type, int n, int nb, qvec x, float *y) {
    ROWS_DISPATCH(rows_vnni_of)
}

/* `groups` whole groups of a simple type's rows one after another, in one call: a step has ~50k
 * groups, and a call each (its dispatch, constants and epilogue) cost ~9% of a step (alternated
 * rounds, Zen 5). The VNNI path's Q4_0/Q4_1 take the byte kernel where the activation has its
 * split bytes. */
#define GROUPS_FOR_TYPE(FN, T)                                                                   \
    case T:                                                                                      \
        for (int g = 0; g < groups; g++) FN(w + g * ROWS * stride, stride, T, ROWS, nb, x, y + g * ROWS); \
        return;
#define GROUPS_DISPATCH(FN)                                                                      \
    switch (type) {                                                                              \
        GROUPS_FOR_TYPE(FN, T_Q4_0) GROUPS_FOR_TYPE(FN, T_Q4_1) GROUPS_FOR_TYPE(FN, T_Q5_0)      \
        GROUPS_FOR_TYPE(FN, T_Q5_1) GROUPS_FOR_TYPE(FN, T_Q8_0)                                  \
    }

AVX2 static void groups_avx2(const uint8_t *w, size_t stride, int type, int groups, int nb, qvec x, float *y) {
    GROUPS_DISPATCH(rows_avx2_of)
}

VNNI static void groups_vnni(const uint8_t *w, size_t stride, int type, int groups, int nb, qvec x, float *y) {
    if (x.b && type == T_Q4_0) {
        for (int g = 0; g < groups; g++) q4_group_vnni_of(w + g * ROWS * stride, stride, T_Q4_0, nb, x, y + g * ROWS);
        return;
    }
    if (x.b && type == T_Q4_1) {
        for (int g = 0; g < groups; g++) q4_group_vnni_of(w + g * ROWS * stride, stride, T_Q4_1, nb, x, y + g * ROWS);
        return;
    }
    GROUPS_DISPATCH(rows_vnni_of)
}

typedef void (*groups_fn)(const uint8_t *, size_t, int, int, int, qvec, float *);

static groups_fn groups_for(int isa) { /* the portable path: NULL, a call of rows a group */
    return isa == ISA_AVX512VNNI ? groups_vnni : isa == ISA_AVX2 ? groups_avx2 : NULL;
}

typedef void (*rows_fn)(const uint8_t *, size_t, int, int, int, qvec, float *);

static rows_fn rows_for(int isa) {
    return isa == ISA_AVX512VNNI ? rows_vnni : isa == ISA_AVX2 ? rows_avx2 : rows_generic;
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

/* `heads` query heads (q: d apart; scores rows `stride` apart; out: d apart) that share one K/V head
 * (a GQA group). The portable form takes them one at a time. */
static void attend_group_generic(const float *q, const uint16_t *k, const uint16_t *v, int n, int d, int heads,
                                 float *scores, size_t stride, float *out) {
    for (int h = 0; h < heads; h++) attend_generic(q + h * d, k, v, n, d, scores + h * stride, out + h * d);
}

/* Four 8-lane dot products summed to four floats (lane i: a[i]'s sum). */
AVX2 INLINE __m128 hsum4(__m256 a0, __m256 a1, __m256 a2, __m256 a3) {
    const __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
    return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

#define MAX_GROUP 8

/* out[h] = sum over positions t of p[h][t] * V[t] (p: the scores rows, already weights), sixteen
 * dimensions at a time (eight for a last odd chunk) with each head's sums in registers over the
 * positions: a weight is broadcast once for sixteen dimensions. With `heads` a constant (see the
 * switch below) the sums stay in registers; a variable count kept them in memory. */
AVX2 INLINE void attend_values(const float *p, size_t stride, const uint16_t *v, int n, int d, const int heads, float *out) {
    int i = 0;
    for (; i + 16 <= d; i += 16) {
        __m256 lo[MAX_GROUP], hi[MAX_GROUP];
        for (int h = 0; h < heads; h++) lo[h] = hi[h] = _mm256_setzero_ps();
        for (int t = 0; t < n; t++) {
            const __m256 v0 = bf16x8(v + (size_t)t * d + i), v1 = bf16x8(v + (size_t)t * d + i + 8);
            for (int h = 0; h < heads; h++) {
                const __m256 weight = _mm256_broadcast_ss(p + h * stride + t);
                lo[h] = _mm256_fmadd_ps(weight, v0, lo[h]);
                hi[h] = _mm256_fmadd_ps(weight, v1, hi[h]);
            }
        }
        for (int h = 0; h < heads; h++) {
            _mm256_storeu_ps(out + h * d + i, lo[h]);
            _mm256_storeu_ps(out + h * d + i + 8, hi[h]);
        }
    }
    if (i < d) {
        __m256 sum[MAX_GROUP];
        for (int h = 0; h < heads; h++) sum[h] = _mm256_setzero_ps();
        for (int t = 0; t < n; t++) {
            const __m256 value = bf16x8(v + (size_t)t * d + i);
            for (int h = 0; h < heads; h++) sum[h] = _mm256_fmadd_ps(_mm256_broadcast_ss(p + h * stride + t), value, sum[h]);
        }
        for (int h = 0; h < heads; h++) _mm256_storeu_ps(out + h * d + i, sum[h]);
    }
}

/* e^x for 8 lanes (x <= 0 here: scores less their maximum), within ~2 ulp of expf: x = k ln2 + r
 * with |r| <= ln2 / 2 (ln2 in two parts), a degree-6 polynomial for e^r, 2^k into the exponent.
 * Below -87.3 (where expf leaves the normal range) it is 0. expf a score at a time, through the
 * library's call, cost a fifth of a long prefill's attention. */
AVX2 INLINE __m256 exp8(__m256 x) {
    const __m256 tiny = _mm256_cmp_ps(x, _mm256_set1_ps(-87.3f), _CMP_LT_OQ);
    x = _mm256_max_ps(x, _mm256_set1_ps(-87.3f));
    const __m256 k = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(k, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 y = _mm256_set1_ps(1.9875691500e-4f);
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894e-2f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459e-1f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201e-1f));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    const __m256i two_k = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
    return _mm256_andnot_ps(tiny, _mm256_mul_ps(y, _mm256_castsi256_ps(two_k)));
}

/* h = SiLU(g) * u over n values. */
static void silu_mul_generic(const float *g, const float *u, int n, float *h) {
    for (int j = 0; j < n; j++) h[j] = g[j] / (1.0f + expf(-g[j])) * u[j];
}

/* The same eight at a time: sigmoid from exp8(-|g|) (its argument never positive, where exp8
 * holds), e / (1 + e) for negative g. expf a value at a time, through the library's call, was
 * 1.9% of a decode step's perf samples on the AMD EPYC (Zen 4); this is 1.3%. */
AVX2 static void silu_mul_avx2(const float *g, const float *u, int n, float *h) {
    const __m256 one = _mm256_set1_ps(1.0f), magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        const __m256 x = _mm256_loadu_ps(g + j);
        const __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), _mm256_and_ps(x, magnitude)));
        const __m256 inv = _mm256_div_ps(one, _mm256_add_ps(one, e));
        const __m256 sigmoid = _mm256_blendv_ps(inv, _mm256_mul_ps(e, inv), x); /* sign bit set: e / (1 + e) */
        _mm256_storeu_ps(h + j, _mm256_mul_ps(_mm256_mul_ps(x, sigmoid), _mm256_loadu_ps(u + j)));
    }
    silu_mul_generic(g + j, u + j, n - j, h + j);
}

typedef void (*silu_fn)(const float *, const float *, int, float *);

/* A scores row to its softmax weights in place: e^(s - best) / their sum. */
AVX2 INLINE void softmax_row(float *row, int n, float best) {
    __m256 total8 = _mm256_setzero_ps();
    const __m256 top = _mm256_set1_ps(best);
    int t = 0;
    for (; t + 8 <= n; t += 8) {
        const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(row + t), top));
        _mm256_storeu_ps(row + t, e);
        total8 = _mm256_add_ps(total8, e);
    }
    float total = hsum256(total8);
    for (; t < n; t++) total += (row[t] = expf(row[t] - best));
    const float inv = 1.0f / total;
    for (t = 0; t + 8 <= n; t += 8) _mm256_storeu_ps(row + t, _mm256_mul_ps(_mm256_loadu_ps(row + t), _mm256_set1_ps(inv)));
    for (; t < n; t++) row[t] *= inv;
}

/* The same with 8 lanes, the group together: each cached K and V row is read and widened from
 * bf16 once for all its heads, not once a head (SmolLM2: 9 query heads over 3 K/V heads; at 2000
 * positions the cache a step reads is ~45 MB this way, three times that a head at a time). Scores
 * go four positions at a time (their keys widened once into a small buffer, each head's four dots
 * summed together), the softmax eight at a time (exp8), the values as attend_values. d a multiple
 * of 8 up to 512, at most MAX_GROUP heads (else the portable loop). */
AVX2 static void attend_group_avx2(const float *q, const uint16_t *k, const uint16_t *v, int n, int d, int heads,
                                   float *scores, size_t stride, float *out) {
    if (d % 8 || d > 512 || heads > MAX_GROUP) {
        attend_group_generic(q, k, v, n, d, heads, scores, stride, out);
        return;
    }
    const float scale = 1.0f / sqrtf((float)d);
    float best[MAX_GROUP];
    float keys[4 * 512] __attribute__((aligned(32)));
    for (int h = 0; h < heads; h++) best[h] = -INFINITY;
    for (int t0 = 0; t0 < n; t0 += 4) {
        const int m = n - t0 < 4 ? n - t0 : 4;
        for (int j = 0; j < 4; j++) /* a missing position: zeros, its score not kept */
            for (int i = 0; i < d; i += 8)
                _mm256_store_ps(keys + j * d + i, j < m ? bf16x8(k + (size_t)(t0 + j) * d + i) : _mm256_setzero_ps());
        for (int h = 0; h < heads; h++) {
            const float *qh = q + h * d;
            __m256 dot[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
            for (int i = 0; i < d; i += 8) {
                const __m256 query = _mm256_loadu_ps(qh + i);
                for (int j = 0; j < 4; j++) dot[j] = _mm256_fmadd_ps(query, _mm256_load_ps(keys + j * d + i), dot[j]);
            }
            float four[4];
            _mm_storeu_ps(four, _mm_mul_ps(hsum4(dot[0], dot[1], dot[2], dot[3]), _mm_set1_ps(scale)));
            for (int j = 0; j < m; j++) {
                scores[h * stride + t0 + j] = four[j];
                best[h] = fmaxf(best[h], four[j]);
            }
        }
    }
    for (int h = 0; h < heads; h++) softmax_row(scores + h * stride, n, best[h]);
    switch (heads) {
    case 1: attend_values(scores, stride, v, n, d, 1, out); return;
    case 2: attend_values(scores, stride, v, n, d, 2, out); return;
    case 3: attend_values(scores, stride, v, n, d, 3, out); return;
    case 4: attend_values(scores, stride, v, n, d, 4, out); return;
    default: attend_values(scores, stride, v, n, d, heads, out); return;
    }
}

/* 16 bf16 as fp32: exact. */
VNNI INLINE __m512 bf16x16(const uint16_t *p) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)), 16));
}

/* attend_values on 512-bit registers: 32 dimensions at a time (16 for a last odd part), so a V
 * row is widened with half the instructions and read in half the passes. d a multiple of 16. */
VNNI INLINE void attend_values_512(const float *p, size_t stride, const uint16_t *v, int n, int d, const int heads, float *out) {
    int i = 0;
    for (; i + 32 <= d; i += 32) {
        __m512 lo[MAX_GROUP], hi[MAX_GROUP];
        for (int h = 0; h < heads; h++) lo[h] = hi[h] = _mm512_setzero_ps();
        for (int t = 0; t < n; t++) {
            const __m512 v0 = bf16x16(v + (size_t)t * d + i), v1 = bf16x16(v + (size_t)t * d + i + 16);
            for (int h = 0; h < heads; h++) {
                const __m512 weight = _mm512_set1_ps(p[h * stride + t]);
                lo[h] = _mm512_fmadd_ps(weight, v0, lo[h]);
                hi[h] = _mm512_fmadd_ps(weight, v1, hi[h]);
            }
        }
        for (int h = 0; h < heads; h++) {
            _mm512_storeu_ps(out + h * d + i, lo[h]);
            _mm512_storeu_ps(out + h * d + i + 16, hi[h]);
        }
    }
    if (i < d) {
        __m512 sum[MAX_GROUP];
        for (int h = 0; h < heads; h++) sum[h] = _mm512_setzero_ps();
        for (int t = 0; t < n; t++) {
            const __m512 value = bf16x16(v + (size_t)t * d + i);
            for (int h = 0; h < heads; h++) sum[h] = _mm512_fmadd_ps(_mm512_set1_ps(p[h * stride + t]), value, sum[h]);
        }
        for (int h = 0; h < heads; h++) _mm512_storeu_ps(out + h * d + i, sum[h]);
    }
}

/* attend_group_avx2 on 512-bit registers where the head size is a multiple of 16: keys widened
 * and dotted sixteen dimensions at a time, the values as attend_values_512 (on the AMD EPYC, Zen 5,
 * whose FMA units are 512 bits wide). The same scores and weights up to float summation order. */
VNNI static void attend_group_vnni(const float *q, const uint16_t *k, const uint16_t *v, int n, int d, int heads,
                                   float *scores, size_t stride, float *out) {
    if (d % 16 || d > 512 || heads > MAX_GROUP) {
        attend_group_avx2(q, k, v, n, d, heads, scores, stride, out);
        return;
    }
    const float scale = 1.0f / sqrtf((float)d);
    float best[MAX_GROUP];
    float keys[4 * 512] __attribute__((aligned(64)));
    for (int h = 0; h < heads; h++) best[h] = -INFINITY;
    for (int t0 = 0; t0 < n; t0 += 4) {
        const int m = n - t0 < 4 ? n - t0 : 4;
        for (int j = 0; j < 4; j++) /* a missing position: zeros, its score not kept */
            for (int i = 0; i < d; i += 16)
                _mm512_store_ps(keys + j * d + i, j < m ? bf16x16(k + (size_t)(t0 + j) * d + i) : _mm512_setzero_ps());
        for (int h = 0; h < heads; h++) {
            const float *qh = q + h * d;
            __m512 dot[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
            for (int i = 0; i < d; i += 16) {
                const __m512 query = _mm512_loadu_ps(qh + i);
                for (int j = 0; j < 4; j++) dot[j] = _mm512_fmadd_ps(query, _mm512_load_ps(keys + j * d + i), dot[j]);
            }
            __m256 half[4];
            for (int j = 0; j < 4; j++) half[j] = _mm256_add_ps(_mm512_castps512_ps256(dot[j]), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(dot[j]), 1)));
            float four[4];
            _mm_storeu_ps(four, _mm_mul_ps(hsum4(half[0], half[1], half[2], half[3]), _mm_set1_ps(scale)));
            for (int j = 0; j < m; j++) {
                scores[h * stride + t0 + j] = four[j];
                best[h] = fmaxf(best[h], four[j]);
            }
        }
    }
    for (int h = 0; h < heads; h++) softmax_row(scores + h * stride, n, best[h]);
    switch (heads) {
    case 1: attend_values_512(scores, stride, v, n, d, 1, out); return;
    case 2: attend_values_512(scores, stride, v, n, d, 2, out); return;
    case 3: attend_values_512(scores, stride, v, n, d, 3, out); return;
    case 4: attend_values_512(scores, stride, v, n, d, 4, out); return;
    default: attend_values_512(scores, stride, v, n, d, heads, out); return;
    }
}

/* ---- several tokens (prefill) ----------------------------------------------------------------- */
/* Y[t][r] = W[r] . X[t]: each weight block, unpacked once, serves up to TOKENS tokens. Token t's
 * activation is x.q + t * cols, its scales x.d / x.s + t * (cols / 32). */
#define TOKENS 4
#define PANEL 16 /* rows: 16 x 1536 columns of Q4_1 are ~15 KB */

static void tile_generic(const uint8_t *row, int lane, int type, int n, int nb, qvec x, float *y, int ldy) {
    for (int t = 0; t < n; t++) {
        const qvec xt = {x.q + (size_t)t * nb * QK, x.d + (size_t)t * nb, x.s + (size_t)t * nb};
        y[(size_t)t * ldy] = dot_generic(row, lane, type, nb, xt);
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
            const simple_at at = simple_block(row, lane, type, b);                                               \
            const block_view v = simple_view(at.blk, type);                                                      \
            weights16(&v, type, &lo, &hi);                                                                       \
            scale0 = scale1 = half_f16c(at.fields);                                                              \
            if (HAS_OFFSET(type)) offset = half_f16c(at.fields + 2);                                             \
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

AVX2 INLINE void tile_avx2_of(const uint8_t *row, int lane, const int type, const int n, int nb, qvec x, float *y, int ldy) {
    TILE_BODY(MADD_AVX2)
}

VNNI INLINE void tile_vnni_of(const uint8_t *row, int lane, const int type, const int n, int nb, qvec x, float *y, int ldy) {
    TILE_BODY(MADD_VNNI)
}

#define TILE_FOR_TYPE(FN, T)                                                                     \
    case T:                                                                                      \
        if (n == TOKENS) FN(row, lane, T, TOKENS, nb, x, y, ldy);                                \
        else                                                                                     \
            for (int t = 0; t < n; t++) {                                                        \
                const qvec xt = {x.q + (size_t)t * nb * QK, x.d + (size_t)t * nb, x.s + (size_t)t * nb}; \
                FN(row, lane, T, 1, nb, xt, y + (size_t)t * ldy, ldy);                           \
            }                                                                                    \
        return;
#define TILE_DISPATCH(FN)                                                                        \
    switch (type) {                                                                              \
        TILE_FOR_TYPE(FN, T_Q4_0) TILE_FOR_TYPE(FN, T_Q4_1) TILE_FOR_TYPE(FN, T_Q5_0)            \
        TILE_FOR_TYPE(FN, T_Q5_1) TILE_FOR_TYPE(FN, T_Q8_0) TILE_FOR_TYPE(FN, T_Q4_K)            \
        TILE_FOR_TYPE(FN, T_Q5_K) TILE_FOR_TYPE(FN, T_Q6_K)                                      \
    }

AVX2 static void tile_avx2(const uint8_t *row, int lane, int type, int n, int nb, qvec x, float *y, int ldy) {
    TILE_DISPATCH(tile_avx2_of)
}

VNNI static void tile_vnni(const uint8_t *row, int lane, int type, int n, int nb, qvec x, float *y, int ldy) {
    TILE_DISPATCH(tile_vnni_of)
}

/* A whole group of a simple type (ROWS rows in the kernels' layout) times n <= TOKENS tokens: each
 * block's four rows are unpacked once for every token (the one-row tile unpacks a row per token
 * group and spends a conversion and a multiply-add per row and token). The rows' scales (and
 * minima) load as one vector, as in the GEMV; the centre of Q4_0/Q5_0 and the minima of Q4_1/Q5_1
 * are offsets per token (s: the sum of its block). The same floats in the same order as the GEMV's
 * group (ROWS_BODY), so one token's logits are bit for bit those of several. */
#define GROUP_TILE_BODY(MADD)                                                                                    \
    __m256 acc[TOKENS];                                                                                          \
    __m128 off[TOKENS];                                                                                          \
    for (int t = 0; t < n; t++) acc[t] = _mm256_setzero_ps(), off[t] = _mm_setzero_ps();                         \
    const __m256i zero = _mm256_setzero_si256();                                                                 \
    const size_t bytes = SIMPLE_BYTES[type];                                                                     \
    for (int b = 0; b < nb; b++) {                                                                               \
        const uint8_t *group = w + (size_t)b * ROWS * bytes;                                                     \
        __m128 d4, m4 = _mm_setzero_ps(); /* the rows' d (and m) */                                              \
        if (HAS_OFFSET(type)) {                                                                                  \
            const __m256 dm = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)group));                          \
            d4 = _mm256_castps256_ps128(_mm256_permutevar8x32_ps(dm, _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6))); \
            m4 = _mm256_castps256_ps128(_mm256_permutevar8x32_ps(dm, _mm256_setr_epi32(1, 3, 5, 7, 1, 3, 5, 7))); \
        } else {                                                                                                 \
            d4 = _mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)group));                                          \
        }                                                                                                        \
        const __m256 d8 = _mm256_set_m128(d4, d4);                                                               \
        __m256i lo[ROWS], hi[ROWS];                                                                              \
        for (int r = 0; r < ROWS; r++) {                                                                         \
            block_view v = simple_view(simple_block(w, r, type, b).blk, type);                                   \
            v.centre = 0; /* in off: the offsets per token */                                                    \
            weights16(&v, type, &lo[r], &hi[r]);                                                                 \
        }                                                                                                        \
        for (int t = 0; t < n; t++) {                                                                            \
            const int16_t *xq = x.q + ((size_t)t * nb + b) * QK;                                                 \
            const __m256i x0 = _mm256_loadu_si256((const __m256i *)xq);                                          \
            const __m256i x1 = _mm256_loadu_si256((const __m256i *)(xq + QH));                                   \
            __m256i ints[ROWS];                                                                                  \
            for (int r = 0; r < ROWS; r++) ints[r] = MADD(MADD(zero, lo[r], x0), hi[r], x1);                     \
            const __m256 scale = _mm256_mul_ps(d8, _mm256_set1_ps(x.d[(size_t)t * nb + b]));                     \
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(group_dot(ints)), scale, acc[t]);                        \
            const float xs = x.s[(size_t)t * nb + b]; /* the offsets as the GEMV takes them: the same floats */ \
            if (HAS_OFFSET(type)) off[t] = _mm_add_ps(off[t], _mm_mul_ps(m4, _mm_set1_ps(xs)));                   \
            else if (CENTRE(type)) off[t] = _mm_fmadd_ps(d4, _mm_set1_ps(-(float)CENTRE(type) * xs), off[t]);     \
        }                                                                                                        \
    }                                                                                                            \
    for (int t = 0; t < n; t++) {                                                                                \
        float sums[4];                                                                                           \
        _mm_storeu_ps(sums, _mm_add_ps(_mm_add_ps(_mm256_castps256_ps128(acc[t]), _mm256_extractf128_ps(acc[t], 1)), off[t])); \
        memcpy(y + (size_t)t * ldy, sums, sizeof sums);                                                          \
    }

AVX2 INLINE void group_tile_avx2_of(const uint8_t *w, const int type, const int n, int nb, qvec x, float *y, int ldy) {
    GROUP_TILE_BODY(MADD_AVX2)
}

VNNI INLINE void group_tile_vnni_of(const uint8_t *w, const int type, const int n, int nb, qvec x, float *y, int ldy) {
    GROUP_TILE_BODY(MADD_VNNI)
}

/* One loop per simple type and token count; returns 0 for a type it does not take (K-quants). */
#define GROUP_TILE_FOR_TYPE(FN, T)                                                               \
    case T:                                                                                      \
        if (n == TOKENS) FN(w, T, TOKENS, nb, x, y, ldy);                                        \
        else FN(w, T, n, nb, x, y, ldy);                                                         \
        return 1;
#define GROUP_TILE_DISPATCH(FN)                                                                  \
    switch (type) {                                                                              \
        GROUP_TILE_FOR_TYPE(FN, T_Q4_0) GROUP_TILE_FOR_TYPE(FN, T_Q4_1)                          \
        GROUP_TILE_FOR_TYPE(FN, T_Q5_0) GROUP_TILE_FOR_TYPE(FN, T_Q5_1)                          \
        GROUP_TILE_FOR_TYPE(FN, T_Q8_0)                                                          \
    }                                                                                            \
    return 0;

AVX2 static int group_tile_avx2(const uint8_t *w, int type, int n, int nb, qvec x, float *y, int ldy) {
    GROUP_TILE_DISPATCH(group_tile_avx2_of)
}

/* GROUP_TILE_BODY for Q4_0/Q4_1 on 512-bit registers, as the VNNI GEMV's group (q4_group_vnni_of):
 * the group's block unpacked once for up to TOKENS tokens, the same floats as that GEMV's. */
VNNI INLINE void q4_group_tile_vnni_of(const uint8_t *w, const int type, const int n, int nb, qvec x, float *y, int ldy) {
    const size_t share = ROWS * SIMPLE_BYTES[type];
    const __m512i row_of_lane = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    __m512 acc[TOKENS];
    __m128 off[TOKENS];
    for (int t = 0; t < n; t++) acc[t] = _mm512_setzero_ps(), off[t] = _mm_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const uint8_t *group = w + (size_t)b * share;
        __m128 d4, m4 = _mm_setzero_ps(); /* the rows' d (and m) */
        if (type == T_Q4_1) {
            const __m256 dm = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)group));
            d4 = _mm256_castps256_ps128(_mm256_permutevar8x32_ps(dm, _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6)));
            m4 = _mm256_castps256_ps128(_mm256_permutevar8x32_ps(dm, _mm256_setr_epi32(1, 3, 5, 7, 1, 3, 5, 7)));
        } else {
            d4 = _mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)group));
        }
        __m512i lo, hi;
        q4_group_nibbles(group + ROWS * FIELD_BYTES(type), &lo, &hi);
        for (int t = 0; t < n; t++) {
            const size_t at = (size_t)t * nb + b;
            const __m512 scale = _mm512_permutexvar_ps(row_of_lane, _mm512_castps128_ps512(_mm_mul_ps(d4, _mm_set1_ps(x.d[at]))));
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(q4_group_dots(lo, hi, x.b + at * 64)), scale, acc[t]);
            if (type == T_Q4_1) off[t] = _mm_add_ps(off[t], _mm_mul_ps(m4, _mm_set1_ps(x.s[at])));
            else off[t] = _mm_fmadd_ps(d4, _mm_set1_ps(-8.0f * x.s[at]), off[t]);
        }
    }
    for (int t = 0; t < n; t++) {
        float sums[16], offs[4];
        _mm512_storeu_ps(sums, acc[t]);
        _mm_storeu_ps(offs, off[t]);
        for (int r = 0; r < ROWS; r++) y[(size_t)t * ldy + r] = (sums[4 * r] + sums[4 * r + 2]) + offs[r];
    }
}

VNNI static int group_tile_vnni(const uint8_t *w, int type, int n, int nb, qvec x, float *y, int ldy) {
    if (x.b)
        switch (type) {
            GROUP_TILE_FOR_TYPE(q4_group_tile_vnni_of, T_Q4_0) GROUP_TILE_FOR_TYPE(q4_group_tile_vnni_of, T_Q4_1)
        }
    GROUP_TILE_DISPATCH(group_tile_vnni_of)
}

typedef int (*group_tile_fn)(const uint8_t *, int, int, int, qvec, float *, int);

/* The portable path has no group tile (0: its rows go through the one-row tile). */
static int group_tile_none(const uint8_t *w, int type, int n, int nb, qvec x, float *y, int ldy) {
    (void)w, (void)type, (void)n, (void)nb, (void)x, (void)y, (void)ldy;
    return 0;
}

static group_tile_fn group_tile_for(int isa) {
    return isa == ISA_AVX512VNNI ? group_tile_vnni : isa == ISA_AVX2 ? group_tile_avx2 : group_tile_none;
}

typedef void (*tile_fn)(const uint8_t *, int, int, int, int, qvec, float *, int);

static tile_fn tile_for(int isa) {
    return isa == ISA_AVX512VNNI ? tile_vnni : isa == ISA_AVX2 ? tile_avx2 : tile_generic;
}

/* The kernels of one instruction set. */
typedef struct {
    rows_fn rows;
    tile_fn tile;
    group_tile_fn group_tile;
    quantize_fn quantize;
    groups_fn groups; /* a simple type's whole groups (NULL: one call of rows a group) */
} kernel_set;

/* The chunks the threads claim: 128 rows of a matrix (whole activation blocks, for the SiLU output
 * quantized in place; long enough that the prefetch runs ahead of the rows: 32 gave a step of
 * 6.7 ms, 96-128 gave 5.2-5.6, 192 5.9, best of 240 on 2 threads of the AMD EPYC, Zen 3), and 256
 * rows of the head. */
#define CHUNK 128
#define HEAD_CHUNK 256

static int row_chunks(int rows) { return (rows + CHUNK - 1) / CHUNK; }

/* The rows of each chunk of a step's phase over `rows` rows: about CHUNK, in a count of chunks the
 * threads share evenly (576 rows in chunks of 128 left one of 2 threads 3 chunks, the other 2 and
 * then nothing to do), a multiple of `align` (ROWS; whole activation blocks for the SiLU output). */
static int chunk_rows(int rows, int nthreads, int align) {
    int n = row_chunks(rows);
    n = (n + nthreads - 1) / nthreads * nthreads;
    const int size = (rows + n - 1) / n;
    return (size + align - 1) / align * align;
}

/* A phase's rows in chunks: `big` chunks of `size` rows, then the last round (about one chunk a
 * thread) in chunks of a quarter of that, so that a thread finishing early waits for at most a
 * small chunk of the other's, not a whole one (2 threads spent ~15% of a step waiting so). */
typedef struct {
    int rows, size, big, small;
} chunking;

static chunking chunks_of(int rows, int nthreads, int align) {
    chunking c = {rows, chunk_rows(rows, nthreads, align), 0, 0};
    c.small = (c.size / 4 + align - 1) / align * align;
    const int tail = nthreads * c.size < rows ? nthreads * c.size : rows;
    c.big = (rows - tail) / c.size;
    return c;
}

static int chunk_count(chunking c) { return c.big + (c.rows - c.big * c.size + c.small - 1) / c.small; }

static void chunk_span(chunking c, int i, int *first, int *last) {
    *first = i < c.big ? i * c.size : c.big * c.size + (i - c.big) * c.small;
    *last = *first + (i < c.big ? c.size : c.small);
    if (*last > c.rows) *last = c.rows;
}

/* Y[t][r] = W[r] . X[t] for rows first..last - 1 and T tokens (y: T rows of ldy floats). One token
 * goes ROWS rows at a time; several go TOKENS at a time over each row, so a block unpacked once
 * serves them all while the chunk's rows stay in cache. */
static void matmul_rows(const qmat *m, qvec x, int T, float *y, int ldy, kernel_set k, int first, int last) {
    const int nb = m->cols / QK;
    const size_t stride = row_bytes_of(m->type, m->cols);
    if (T == 1) {
        int r = first;
        if (k.groups && SIMPLE(m->type) && first % ROWS == 0) {
            const int end = last < m->rows / ROWS * ROWS ? last : m->rows / ROWS * ROWS;
            const int groups = end > first ? (end - first) / ROWS : 0;
            k.groups(m->w + (size_t)first * stride, stride, m->type, groups, nb, x, y + first);
            r += groups * ROWS;
        }
        for (; r < last; r += ROWS)
            k.rows(m->w + (size_t)r * stride, stride, m->type, last - r < ROWS ? last - r : ROWS, nb, x, y + r);
        return;
    }
    for (int t0 = 0; t0 < T; t0 += TOKENS) {
        const qvec xt = {x.q + (size_t)t0 * m->cols, x.d + (size_t)t0 * nb, x.s + (size_t)t0 * nb,
                         x.b ? x.b + 2 * (size_t)t0 * m->cols : NULL};
        const int n = T - t0 < TOKENS ? T - t0 : TOKENS;
        for (int r = first; r < last; r++) { /* a simple type's row in a group: the group and its lane */
            const int lane = SIMPLE(m->type) && r < m->rows / ROWS * ROWS ? r % ROWS : -1;
            if (lane == 0 && r + ROWS <= last &&
                k.group_tile(m->w + (size_t)r * stride, m->type, n, nb, xt, y + (size_t)t0 * ldy + r, ldy)) {
                r += ROWS - 1; /* the whole group at once */
                continue;
            }
            k.tile(m->w + (size_t)(lane < 0 ? r : r - lane) * stride, lane, m->type, n, nb, xt, y + (size_t)t0 * ldy + r, ldy);
        }
    }
}

static void head_chunk(const q8_rows *m, qvec x, float *y, head_fn rows, int c) {
    const int first = c * HEAD_CHUNK;
    rows(m, first, m->rows - first < HEAD_CHUNK ? m->rows - first : HEAD_CHUNK, x, y);
}

/* Token t's part of a quantized activation of rows of `cols`, from column `first` (a block edge). */
static qvec token_part(qvec v, int t, int cols, int first) {
    const size_t at = (size_t)t * cols + first;
    return (qvec){v.q + at, v.d + at / QK, v.s + at / QK, v.b ? v.b + 2 * at : NULL};
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

typedef void (*attend_fn)(const float *, const uint16_t *, const uint16_t *, int, int, int, float *, size_t, float *);

/* A step is a row of phases (per layer: QKV, attention, O, gate/up with SiLU, down; then the head),
 * each cut into chunks that the threads claim one at a time. The thread that completes a phase's
 * last chunk runs its serial tail (RoPE and the KV write, a residual, a norm, quantizing the next
 * input) and opens the next phase. So a thread only ever waits for work another thread has claimed,
 * never for it to arrive: one the OS has descheduled finds the phases done when it runs again, where
 * a barrier would stall each phase until it ran (on a busy machine 2 threads ran 10x slower than 1). */
enum { P_QKV, P_ATTN, P_O, P_FFN, P_DOWN, PER_LAYER };

typedef struct {
    atomic_int next, done; /* chunks claimed, chunks completed */
    char pad[64 - 2 * sizeof(atomic_int)]; /* a cache line each: the threads hammer them */
} phase_counter;

typedef struct {
    const model_weights *m;
    kernel_set k;
    head_fn head_rows;
    attend_fn attend;
    silu_fn silu_mul;
    int T, pos, capacity, logit_rows, n_phases, q_rows, kv_rows, qkv_rows, nthreads;
    size_t n_max, layer_stride;
    float *x, *logits;          /* the residual stream [T, dim]; logits [logit_rows, vocab] or NULL */
    const float *cos, *sin;
    uint16_t *k_cache, *v_cache;
    float *h, *qkv, *attn, *proj, *gu, *scores; /* scratch */
    qvec narrow, wide;          /* quantized inputs: of QKV, gate/up and the head; of O and down */
    phase_counter *counters;
    atomic_int open;            /* phases before this one are complete */
} step;

/* The rows of a layer's matmul phase (QKV: Q's, K's and V's end to end) in their chunks. */
static chunking phase_rows(const step *s, int p) {
    const layer_weights *lw = &s->m->layers[p / PER_LAYER];
    int rows, align = ROWS;
    switch (p % PER_LAYER) {
    case P_QKV: rows = lw->q.rows + lw->k.rows + lw->v.rows; break;
    case P_O: rows = lw->o.rows; break;
    case P_FFN: rows = s->m->hidden, align = QK; break;
    default: rows = lw->down.rows;
    }
    return chunks_of(rows, s->nthreads, align);
}

static int phase_chunks(const step *s, int p) {
    const model_weights *m = s->m;
    if (p == m->n_layers * PER_LAYER) return ((m->output.w ? m->output.rows : m->head.rows) + HEAD_CHUNK - 1) / HEAD_CHUNK;
    if (p % PER_LAYER == P_ATTN) return s->T * m->n_kv_heads;
    return chunk_count(phase_rows(s, p));
}

/* Token t's query heads of K/V head g over positions 0..pos + t (its own K/V written by the QKV
 * phase's tail). */
static void attend_chunk(step *s, int l, int c) {
    const model_weights *m = s->m;
    const int H = m->n_heads, KV = m->n_kv_heads, D = m->head_dim, G = H / KV, t = c / KV, g = c % KV;
    const size_t base = l * s->layer_stride + (size_t)g * s->capacity * D;
    s->attend(s->qkv + (size_t)t * s->qkv_rows + g * G * D, s->k_cache + base, s->v_cache + base, s->pos + t + 1, D, G,
              s->scores + ((size_t)t * H + g * G) * s->n_max, s->n_max, s->attn + (size_t)t * s->q_rows + g * G * D);
}

/* Rows first..last - 1 of Q, K and V end to end, each matrix's into its own columns of qkv. */
static void qkv_rows(step *s, const layer_weights *lw, int first, int last) {
    const qmat *parts[3] = {&lw->q, &lw->k, &lw->v};
    for (int i = 0, at = 0; i < 3; at += parts[i]->rows, i++) {
        const int lo = first > at ? first : at, hi = last < at + parts[i]->rows ? last : at + parts[i]->rows;
        if (lo < hi) matmul_rows(parts[i], s->narrow, s->T, s->qkv + at, s->qkv_rows, s->k, lo - at, hi - at);
    }
}

/* Rows first..last - 1 of gate and up for every token, then SiLU(gate) * up quantized in place as
 * down's input (the rows are whole blocks of 32). */
static void ffn_rows(step *s, const layer_weights *lw, int first, int last) {
    const int hidden = s->m->hidden;
    matmul_rows(&lw->gate, s->narrow, s->T, s->gu, 2 * hidden, s->k, first, last);
    matmul_rows(&lw->up, s->narrow, s->T, s->gu + hidden, 2 * hidden, s->k, first, last);
    for (int t = 0; t < s->T; t++) {
        const float *g = s->gu + (size_t)t * 2 * hidden, *u = g + hidden;
        float *h = s->h + (size_t)t * hidden;
        s->silu_mul(g + first, u + first, last - first, h + first);
        s->k.quantize(h + first, last - first, token_part(s->wide, t, hidden, first));
    }
}

static void phase_chunk(step *s, int p, int c) {
    const model_weights *m = s->m;
    if (p == m->n_layers * PER_LAYER && m->output.w) { /* every token over each row: it is read once */
        const int first = c * HEAD_CHUNK, rows = m->output.rows;
        matmul_rows(&m->output, s->narrow, s->logit_rows, s->logits, rows, s->k, first, first + HEAD_CHUNK < rows ? first + HEAD_CHUNK : rows);
        return;
    }
    if (p == m->n_layers * PER_LAYER) {
        for (int t = 0; t < s->logit_rows; t++)
            head_chunk(&m->head, token_part(s->narrow, t, m->dim, 0), s->logits + (size_t)t * m->head.rows, s->head_rows, c);
        return;
    }
    if (p % PER_LAYER == P_ATTN) {
        attend_chunk(s, p / PER_LAYER, c);
        return;
    }
    const layer_weights *lw = &m->layers[p / PER_LAYER];
    int first, last;
    chunk_span(phase_rows(s, p), c, &first, &last);
    switch (p % PER_LAYER) {
    case P_QKV: qkv_rows(s, lw, first, last); return;
    case P_O: matmul_rows(&lw->o, s->wide, s->T, s->proj, m->dim, s->k, first, last); return;
    case P_FFN: ffn_rows(s, lw, first, last); return;
    default: matmul_rows(&lw->down, s->wide, s->T, s->proj, m->dim, s->k, first, last); return;
    }
}

/* Every token's residual through RMSNorm, quantized as the next matmuls' input. */
static void norm_inputs(step *s, const float *w) {
    const int dim = s->m->dim;
    for (int t = 0; t < s->T; t++) {
        rms_norm(s->x + (size_t)t * dim, w, dim, s->m->eps, s->h + (size_t)t * dim);
        s->k.quantize(s->h + (size_t)t * dim, dim, token_part(s->narrow, t, dim, 0));
    }
}

static void add_projection(step *s) {
    for (size_t i = 0; i < (size_t)s->T * s->m->dim; i++) s->x[i] += s->proj[i];
}

/* Qwen2's bias, Qwen3's Q/K norm, RoPE, and each token's K/V into the cache. */
static void place_qkv(step *s, int l) {
    const model_weights *m = s->m;
    const layer_weights *lw = &m->layers[l];
    const int D = m->head_dim, H = m->n_heads, KV = m->n_kv_heads;
    uint16_t *kl = s->k_cache + l * s->layer_stride, *vl = s->v_cache + l * s->layer_stride;
    for (int t = 0; t < s->T; t++) {
        float *row = s->qkv + (size_t)t * s->qkv_rows;
        if (lw->qkv_bias)
            for (int i = 0; i < s->qkv_rows; i++) row[i] += lw->qkv_bias[i];
        if (lw->q_norm)
            for (int hh = 0; hh < H + KV; hh++) rms_norm(row + hh * D, hh < H ? lw->q_norm : lw->k_norm, D, m->eps, row + hh * D);
        for (int hh = 0; hh < H + KV; hh++) rope(row + hh * D, s->cos + (size_t)t * D, s->sin + (size_t)t * D, D);
        for (int kh = 0; kh < KV; kh++) {
            const float *k = row + s->q_rows + kh * D, *v = row + s->q_rows + s->kv_rows + kh * D;
            const size_t at = ((size_t)kh * s->capacity + s->pos + t) * D;
            for (int i = 0; i < D; i++) {
                kl[at + i] = fp32_to_bf16(k[i]);
                vl[at + i] = fp32_to_bf16(v[i]);
            }
        }
    }
}

/* After the last layer: the final norm (x keeps the normed states) and the head's input. */
static void finish_layers(step *s) {
    const int dim = s->m->dim;
    for (int t = 0; t < s->T; t++) {
        rms_norm(s->x + (size_t)t * dim, s->m->final_norm, dim, s->m->eps, s->h + (size_t)t * dim);
        memcpy(s->x + (size_t)t * dim, s->h + (size_t)t * dim, sizeof(float) * dim);
    }
    for (int t = 0; t < s->logit_rows; t++)
        s->k.quantize(s->x + (size_t)(s->T - s->logit_rows + t) * dim, dim, token_part(s->narrow, t, dim, 0));
}

/* The serial tail of phase p, run by the thread that completed its last chunk. */
static void phase_tail(step *s, int p) {
    const model_weights *m = s->m;
    const int l = p / PER_LAYER;
    if (p == m->n_layers * PER_LAYER) return;
    switch (p % PER_LAYER) {
    case P_QKV: place_qkv(s, l); return;
    case P_ATTN:
        for (int t = 0; t < s->T; t++)
            s->k.quantize(s->attn + (size_t)t * s->q_rows, s->q_rows, token_part(s->wide, t, s->q_rows, 0));
        return;
    case P_O:
        add_projection(s);
        norm_inputs(s, m->layers[l].ffn_norm);
        return;
    case P_FFN: return;
    default:
        add_projection(s);
        if (l + 1 < m->n_layers) norm_inputs(s, m->layers[l + 1].attn_norm);
        else finish_layers(s);
    }
}

static void wait_open(step *s, int p) {
    /* spin a little (a phase is microseconds), then give the CPU to whoever holds the work */
    for (int spins = 0; atomic_load_explicit(&s->open, memory_order_acquire) < p; spins++) {
        if (spins < 4096) _mm_pause();
        else sched_yield();
    }
}

static void run_phases(step *s) {
    for (int p = 0; p < s->n_phases; p++) {
        wait_open(s, p);
        const int n = phase_chunks(s, p);
        for (int c; (c = atomic_fetch_add_explicit(&s->counters[p].next, 1, memory_order_relaxed)) < n;) {
            phase_chunk(s, p, c);
            if (atomic_fetch_add_explicit(&s->counters[p].done, 1, memory_order_acq_rel) + 1 == n) {
                phase_tail(s, p);
                atomic_store_explicit(&s->open, p + 1, memory_order_release);
            }
        }
    }
}

/* T tokens through every layer, at positions pos..pos + T - 1 after the cached ones. x: [T, dim]
 * fp32, the tokens' input embeddings in, their final-normed hidden states out. logits: NULL, or
 * [logit_rows, vocab] for the last logit_rows tokens (through the head: m->head.q set).
 * k_cache / v_cache: bf16 [layers, kv_heads, capacity, head_dim]; the tokens' K/V are written and
 * each token attends to positions 0..its own. cos / sin: [T, head_dim] fp32, the tokens' rows. */
int nd_forward(const model_weights *m, float *x, int T, float *logits, int logit_rows, int pos, uint16_t *k_cache,
               uint16_t *v_cache, int capacity, const float *cos, const float *sin, int nthreads, int isa) {
    const int D = m->head_dim, H = m->n_heads, KV = m->n_kv_heads, dim = m->dim, hidden = m->hidden;
    const int q_rows = H * D, kv_rows = KV * D, widest = max3(dim, hidden, q_rows);
    if (D > 512 || T < 1 || m->n_layers < 1 || pos + T > capacity || logit_rows < 0 || logit_rows > T ||
        (logits && !m->head.q && !m->output.w) || hidden % QK)
        return -1;
    step s = {
        .m = m, .k = {rows_for(isa), tile_for(isa), group_tile_for(isa), quantize_for(isa), groups_for(isa)}, .head_rows = head_for(isa),
        .attend = isa == ISA_GENERIC ? attend_group_generic : isa == ISA_AVX2 ? attend_group_avx2 : attend_group_vnni,
        .silu_mul = isa == ISA_GENERIC ? silu_mul_generic : silu_mul_avx2,
        .T = T, .pos = pos, .capacity = capacity, .logit_rows = logits ? logit_rows : 0,
        .n_phases = m->n_layers * PER_LAYER + (logits && logit_rows ? 1 : 0),
        .q_rows = q_rows, .kv_rows = kv_rows, .qkv_rows = q_rows + 2 * kv_rows, .nthreads = nthreads > 0 ? nthreads : 1,
        .n_max = (size_t)pos + T, .layer_stride = (size_t)KV * capacity * D,
        .x = x, .logits = logits, .cos = cos, .sin = sin, .k_cache = k_cache, .v_cache = v_cache,
    };
    s.h = malloc(sizeof(float) * T * widest);
    s.qkv = malloc(sizeof(float) * T * s.qkv_rows);
    s.attn = malloc(sizeof(float) * T * q_rows);
    s.proj = malloc(sizeof(float) * T * dim);
    s.gu = malloc(sizeof(float) * T * 2 * hidden);
    s.scores = malloc(sizeof(float) * (size_t)T * H * s.n_max);
    qvec *acts[] = {&s.narrow, &s.wide};
    for (int i = 0; i < 2; i++) {
        acts[i]->q = malloc(sizeof(int16_t) * T * widest);
        acts[i]->d = malloc(sizeof(float) * T * (widest / QK));
        acts[i]->s = malloc(sizeof(float) * T * (widest / QK));
        acts[i]->b = isa == ISA_AVX512VNNI ? malloc(2 * (size_t)T * widest) : NULL;
    }
    s.counters = calloc(s.n_phases, sizeof(phase_counter));
    int rc = -2;
    if (s.h && s.qkv && s.attn && s.proj && s.gu && s.scores && s.narrow.q && s.narrow.d && s.narrow.s && s.wide.q &&
        s.wide.d && s.wide.s && s.counters) {
        atomic_init(&s.open, 0);
        norm_inputs(&s, m->layers[0].attn_norm);
#pragma omp parallel num_threads(nthreads)
        run_phases(&s);
        rc = 0;
    }
    free(s.h); free(s.qkv); free(s.attn); free(s.proj); free(s.gu); free(s.scores); free(s.counters);
    for (int i = 0; i < 2; i++) {
        free(acts[i]->q); free(acts[i]->d); free(acts[i]->s); free(acts[i]->b);
    }
    return rc;
}

/* x quantized as the decoder step does (with split bytes for a VNNI GEMV: `bytes`), into buffers
 * released with release(); 0 when allocated. */
static int quantized(const float *x, int n, qvec *out, quantize_fn quantize, int bytes) {
    out->q = malloc(sizeof(int16_t) * n);
    out->d = malloc(sizeof(float) * (n / QK));
    out->s = malloc(sizeof(float) * (n / QK));
    out->b = bytes ? malloc(2 * (size_t)n) : NULL;
    if (!out->q || !out->d || !out->s || (bytes && !out->b)) return -2;
    quantize(x, n, *out);
    return 0;
}

static void release(qvec v) {
    free(v.q); free(v.d); free(v.s); free(v.b);
}

/* Y = X W^T for T tokens (x: [T, cols], y: [T, rows]) in the decoder step's chunks: one token
 * through the GEMV, several through the tile kernel (each weight block read once for up to TOKENS
 * of them: a long prefill's logits over the head, one pass instead of one a token). */
int nd_matmul(const qmat *m, const float *x, int T, float *y, int nthreads, int isa) {
    qvec act;
    const kernel_set k = {rows_for(isa), tile_for(isa), group_tile_for(isa), quantize_for(isa), groups_for(isa)};
    const int rc = T < 1 ? -1 : quantized(x, T * m->cols, &act, k.quantize, isa == ISA_AVX512VNNI);
    if (rc == 0) {
#pragma omp parallel for num_threads(nthreads) schedule(dynamic)
        for (int c = 0; c < row_chunks(m->rows); c++) {
            const int first = c * CHUNK;
            matmul_rows(m, act, T, y, m->rows, k, first, first + CHUNK < m->rows ? first + CHUNK : m->rows);
        }
    }
    if (rc != -1) release(act);
    return rc;
}

/* y = W x for one matrix (tests). */
int nd_gemv(const qmat *m, const float *x, float *y, int nthreads, int isa) { return nd_matmul(m, x, 1, y, nthreads, isa); }

/* logits = head x (tests), as the decoder step's last phase. */
int nd_head(const q8_rows *m, const float *x, float *y, int nthreads, int isa) {
    qvec act;
    const int rc = quantized(x, m->cols, &act, quantize_for(isa), 0);
    const head_fn rows = head_for(isa);
    if (rc == 0) {
#pragma omp parallel for num_threads(nthreads) schedule(dynamic)
        for (int c = 0; c < (m->rows + HEAD_CHUNK - 1) / HEAD_CHUNK; c++) head_chunk(m, act, y, rows, c);
    }
    release(act);
    return rc;
}

/* Rows ids[0..n - 1] of a matrix in the kernels' layout, as floats into out [n, cols]: a token
 * embedding tied to the head, read from the head's blocks (each weight scale * (u - centre) +
 * offset, in that order: Q8_0's d * q exactly). -1: an id out of range. */
int nd_rows(const qmat *m, const int32_t *ids, int n, float *out) {
    const size_t stride = row_bytes_of(m->type, m->cols);
    const int nb = m->cols / QK, grouped = m->rows / ROWS * ROWS;
    for (int i = 0; i < n; i++) {
        const int r = ids[i];
        if (r < 0 || r >= m->rows) return -1;
        const int lane = SIMPLE(m->type) && r < grouped ? r % ROWS : -1;
        const uint8_t *base = m->w + (size_t)(lane < 0 ? r : r - lane) * stride;
        for (int b = 0; b < nb; b++) {
            const block_view v = view_of(base, lane, m->type, b);
            float *at = out + (size_t)i * m->cols + b * QK;
            for (int k = 0; k < QK; k++)
                at[k] = v.scale[k / QH] * (float)(integer_at(&v, m->type, k) - v.centre) + v.offset;
        }
    }
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
