// The CPU kernels' Gumbel noise: philox_gumbel.h's per-element form run over many consecutive
// counters at once (docs/assign_op.md, "Noise: what is guaranteed"). Included by
// assign_kernels_impl.h inside each instruction-set namespace (as gemm_avx2.h is), so every copy
// gets its own body:
//
//   AVX2 copy (GVF_AVX2): Philox rounds and the uniform -> Gumbel transform in 8-lane intrinsics;
//   other copies: 32 lanes of plain C++ advancing through the rounds together, for the
//                 compiler's vectoriser (`omp simd`; SSE2 on x86-64, NEON on aarch64).
//
// Both give the bits of philox::gumbel_at(counter, seed) up to FMA contraction in the log.
#pragma once


#if defined(GVF_AVX2)
// AVX2 has no 32x32 -> high 32 multiply: even and odd lanes go through vpmuludq separately and
// their halves are blended back. Four independent 8-lane groups per step hide the latency; the
// uniform -> Gumbel transform is the same algorithm as philox::gumbel_from_bits, in intrinsics (the
// auto-vectorised form of the clamps and selects compiles to several times more instructions).
GVF_INLINE void mul_hi_lo(__m256i a, __m256i m, __m256i* hi, __m256i* lo) {
  const __m256i even = _mm256_mul_epu32(a, m);                        // 64-bit products, lanes 0,2,4,6
  const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);  // lanes 1,3,5,7
  *hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
  *lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
}

// philox::log_pos on 8 lanes (same steps and constants).
GVF_INLINE __m256 log_pos8(__m256 x) {
  const __m256i ix = _mm256_castps_si256(x);
  __m256i e = _mm256_sub_epi32(_mm256_srli_epi32(ix, 23), _mm256_set1_epi32(126));  // x > 0: no sign bit
  __m256 m = _mm256_castsi256_ps(
      _mm256_or_si256(_mm256_and_si256(ix, _mm256_set1_epi32(0x007FFFFF)), _mm256_set1_epi32(0x3F000000)));
  const __m256 small = _mm256_cmp_ps(m, _mm256_set1_ps(philox::kSqrtHalf), _CMP_LT_OQ);
  e = _mm256_sub_epi32(e, _mm256_and_si256(_mm256_castps_si256(small), _mm256_set1_epi32(1)));
  m = _mm256_sub_ps(_mm256_add_ps(m, _mm256_and_ps(small, m)), _mm256_set1_ps(1.0f));
  const __m256 z = _mm256_mul_ps(m, m);
  __m256 y = _mm256_set1_ps(philox::kLogP0);
  y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(philox::kLogP1));
  y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(philox::kLogP2));
  y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(philox::kLogP3));
  y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(philox::kLogP4));
  y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(philox::kLogP5));
  y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(philox::kLogP6));
  y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(philox::kLogP7));
  y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(philox::kLogP8));
  y = _mm256_mul_ps(_mm256_mul_ps(y, m), z);
  const __m256 fe = _mm256_cvtepi32_ps(e);
  y = _mm256_fmadd_ps(_mm256_set1_ps(philox::kLn2Lo), fe, y);
  y = _mm256_fnmadd_ps(_mm256_set1_ps(0.5f), z, y);
  return _mm256_fmadd_ps(_mm256_set1_ps(philox::kLn2Hi), fe, _mm256_add_ps(m, y));
}

GVF_INLINE __m256 gumbel8(__m256i x) {
  const __m256i xi = _mm256_xor_si256(x, _mm256_srai_epi32(x, 31));  // ~x when negative
  __m256 u = _mm256_mul_ps(_mm256_cvtepi32_ps(xi), _mm256_set1_ps(philox::kUniformScale));
  u = _mm256_min_ps(_mm256_max_ps(u, _mm256_set1_ps(philox::kUniformMin)), _mm256_set1_ps(philox::kUniformMax));
  const __m256 w = _mm256_sub_ps(_mm256_setzero_ps(), log_pos8(u));
  return _mm256_sub_ps(_mm256_setzero_ps(), log_pos8(w));
}

// dst[j] = noise of counter first + j (j < len)
void gumbel_run(float* dst, int64_t len, uint64_t seed, uint64_t first) {
  constexpr int kGroups = 4;
  const __m256i mul_a = _mm256_set1_epi32(static_cast<int32_t>(philox::kMulA));
  const __m256i mul_b = _mm256_set1_epi32(static_cast<int32_t>(philox::kMulB));
  __m256i key0[philox::kRounds], key1[philox::kRounds];
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int round = 0; round < philox::kRounds; ++round) {
    key0[round] = _mm256_set1_epi32(static_cast<int32_t>(k0));
    key1[round] = _mm256_set1_epi32(static_cast<int32_t>(k1));
    k0 += philox::kKeyStep0;
    k1 += philox::kKeyStep1;
  }
  alignas(32) uint32_t lo[8 * kGroups], hi[8 * kGroups];
  alignas(32) float out[8 * kGroups];
  for (int64_t j0 = 0; j0 < len; j0 += 8 * kGroups) {
    for (int64_t l = 0; l < 8 * kGroups; ++l) {
      const uint64_t c = first + static_cast<uint64_t>(j0 + l);
      lo[l] = static_cast<uint32_t>(c);
      hi[l] = static_cast<uint32_t>(c >> 32);
    }
    __m256i c0[kGroups], c1[kGroups], c2[kGroups], c3[kGroups];
    for (int v = 0; v < kGroups; ++v) {
      c0[v] = _mm256_load_si256(reinterpret_cast<const __m256i*>(lo + 8 * v));
      c1[v] = _mm256_load_si256(reinterpret_cast<const __m256i*>(hi + 8 * v));
      c2[v] = _mm256_setzero_si256();
      c3[v] = _mm256_setzero_si256();
    }
#pragma GCC unroll 10
    for (int round = 0; round < philox::kRounds; ++round) {  // philox::philox_round, 8 lanes x 4
      for (int v = 0; v < kGroups; ++v) {
        __m256i b_hi, b_lo, a_hi, a_lo;
        mul_hi_lo(c2[v], mul_b, &b_hi, &b_lo);
        mul_hi_lo(c0[v], mul_a, &a_hi, &a_lo);
        c0[v] = _mm256_xor_si256(_mm256_xor_si256(b_hi, c1[v]), key0[round]);
        c2[v] = _mm256_xor_si256(_mm256_xor_si256(a_hi, c3[v]), key1[round]);
        c1[v] = b_lo;
        c3[v] = a_lo;
      }
    }
    const int64_t count = min64(8 * kGroups, len - j0);
    float* dst_j = dst + j0;
    if (count == 8 * kGroups) {
      for (int v = 0; v < kGroups; ++v) _mm256_storeu_ps(dst_j + 8 * v, gumbel8(c0[v]));
    } else {
      for (int v = 0; v < kGroups; ++v) _mm256_store_ps(out + 8 * v, gumbel8(c0[v]));
      for (int64_t l = 0; l < count; ++l) dst_j[l] = out[l];
    }
  }
}
#else
// Portable C++ for the compiler's vectoriser (SSE2 on x86-64, NEON on aarch64; GCC and clang).
// Each stage is one `omp simd` loop over kLanes counters whose body is straight-line code:
// * the 32 x 32 -> 64 products each give both halves (mul-hi and mul-lo from one widening multiply:
//   pmuludq on SSE2, umull/umull2 on NEON), instead of a mul-hi and a separate 32-bit multiply
//   that SSE2 has no instruction for;
// * a block never crosses a multiple of 2**32 counters, so the counter's high word is the same in
//   every lane: with c2 = c3 = 0, rounds 1 and 2 need one lane product each (round 2's A product is
//   one scalar), and the last round keeps only the B product's high half (the output word);
// * the uniform's clamp and the log's range reduction are integer max/min and masks rather than
//   float selects, which GCC if-converted into code several times longer. Same operations, in the
//   same order, on the same values as philox::gumbel_from_bits: the bits are unchanged, and FMA
//   contraction (aarch64) applies to the same products as in philox::log_pos.
constexpr int64_t kNoiseLanes = 32;  // 8 SSE2 / NEON vectors per stage: independent work in flight

// x of counters (lo + l, hi) for l < count (a multiple of kNoiseLanes); lo + count <= 2**32.
void philox_block(uint32_t* bits, int64_t count, uint32_t lo, uint32_t hi, uint64_t seed) {
  using philox::kMulA;
  using philox::kMulB;
  using philox::kRounds;
  uint32_t key0[kRounds], key1[kRounds];
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int round = 0; round < kRounds; ++round) {
    key0[round] = k0;
    key1[round] = k1;
    k0 += philox::kKeyStep0;
    k1 += philox::kKeyStep1;
  }
  // Round 1 on (c, hi, 0, 0): c0 = hi ^ k0 (the same in every lane), c2 = mulhi(A, c) ^ k1,
  // c1 = 0, c3 = A * c. Round 2's A product is of that common c0.
  const uint32_t r1_c0 = hi ^ key0[0];
  const uint64_t r2_a = static_cast<uint64_t>(kMulA) * r1_c0;
  const uint32_t r2_c2 = static_cast<uint32_t>(r2_a >> 32) ^ key1[1], r2_c3 = static_cast<uint32_t>(r2_a);
  for (int64_t j0 = 0; j0 < count; j0 += kNoiseLanes) {
    alignas(64) uint32_t c0[kNoiseLanes], c1[kNoiseLanes], c2[kNoiseLanes], c3[kNoiseLanes];
#pragma omp simd
    for (int64_t l = 0; l < kNoiseLanes; ++l) {  // rounds 1 and 2
      const uint64_t a = static_cast<uint64_t>(kMulA) * (lo + static_cast<uint32_t>(j0 + l));
      const uint64_t b = static_cast<uint64_t>(kMulB) * (static_cast<uint32_t>(a >> 32) ^ key1[0]);
      c0[l] = static_cast<uint32_t>(b >> 32) ^ key0[1];
      c1[l] = static_cast<uint32_t>(b);
      c2[l] = r2_c2 ^ static_cast<uint32_t>(a);
      c3[l] = r2_c3;
    }
    for (int round = 2; round < kRounds - 1; ++round) {  // philox::philox_round
      const uint32_t rk0 = key0[round], rk1 = key1[round];
#pragma omp simd
      for (int64_t l = 0; l < kNoiseLanes; ++l) {
        const uint64_t b = static_cast<uint64_t>(kMulB) * c2[l];
        const uint64_t a = static_cast<uint64_t>(kMulA) * c0[l];
        c0[l] = static_cast<uint32_t>(b >> 32) ^ c1[l] ^ rk0;
        c2[l] = static_cast<uint32_t>(a >> 32) ^ c3[l] ^ rk1;
        c1[l] = static_cast<uint32_t>(b);
        c3[l] = static_cast<uint32_t>(a);
      }
    }
    const uint32_t last_k0 = key0[kRounds - 1];
#pragma omp simd
    for (int64_t l = 0; l < kNoiseLanes; ++l) {  // the last round's c0
      bits[j0 + l] = static_cast<uint32_t>((static_cast<uint64_t>(kMulB) * c2[l]) >> 32) ^ c1[l] ^ last_k0;
    }
  }
}

// philox::log_pos with the range reduction's selects as masks: small ? e - 1 : e is e + mask, and
// small ? (m + m) - 1 : m - 1 is (m + (m & mask)) - 1 (m + 0 is m).
GVF_INLINE float log_pos_lanes(float x) {
  const uint32_t ix = float_to_bits(x);
  const float m0 = bits_to_float((ix & 0x007FFFFFu) | 0x3F000000u);
  const int32_t small = m0 < philox::kSqrtHalf ? -1 : 0;
  const int32_t e = static_cast<int32_t>(ix >> 23) - 126 + small;  // x > 0: no sign bit
  const float m = (m0 + bits_to_float(float_to_bits(m0) & static_cast<uint32_t>(small))) - 1.0f;
  return philox::log_from_reduced(m, e);
}

// philox::gumbel_from_bits with the clamp on the uniform's bits: u >= 0, where the order of the
// bits as integers is the order of the floats.
GVF_INLINE float gumbel_from_bits_lanes(uint32_t x) {
  const int32_t xs = static_cast<int32_t>(x);
  const int32_t xi = xs ^ (xs >> 31);  // ~x when negative
  int32_t u = static_cast<int32_t>(float_to_bits(static_cast<float>(xi) * philox::kUniformScale));
  const int32_t lo = static_cast<int32_t>(float_to_bits(philox::kUniformMin));  // constants after folding
  const int32_t hi = static_cast<int32_t>(float_to_bits(philox::kUniformMax));
  u = u < lo ? lo : u;
  u = u > hi ? hi : u;
  return -log_pos_lanes(-log_pos_lanes(bits_to_float(static_cast<uint32_t>(u))));
}

// dst[j] = noise of counter first + j (j < len)
void gumbel_run(float* dst, int64_t len, uint64_t seed, uint64_t first) {
  constexpr int64_t kBlock = 256;
  alignas(64) uint32_t bits[kBlock];
  for (int64_t j0 = 0, count = 0; j0 < len; j0 += count) {
    const uint64_t c = first + static_cast<uint64_t>(j0);
    const uint32_t lo = static_cast<uint32_t>(c), hi = static_cast<uint32_t>(c >> 32);
    const int64_t to_carry = static_cast<int64_t>((uint64_t{1} << 32) - lo);  // counters before hi changes
    count = min64(min64(kBlock, len - j0), to_carry);
    philox_block(bits, round_up(count, kNoiseLanes), lo, hi, seed);
    float* out = dst + j0;
#pragma omp simd
    for (int64_t l = 0; l < count; ++l) out[l] = gumbel_from_bits_lanes(bits[l]);
  }
}
#endif
