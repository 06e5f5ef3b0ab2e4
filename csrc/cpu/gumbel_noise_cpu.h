// The CPU kernels' Gumbel noise: philox_gumbel.h's per-element form run over many consecutive
// counters at once (docs/assign_op.md, "Noise: what is guaranteed"). Included by
// assign_kernels_impl.h inside each instruction-set namespace (as gemm_avx2.h is), so every copy
// gets its own body:
//
//   AVX2 copy (GVF_AVX2): Philox rounds and the uniform -> Gumbel transform in 8-lane intrinsics;
//   other copies: 16 lanes of plain C++ advancing through the rounds together, for the
//                 compiler's vectoriser (`omp simd`).
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
// bits[l] = first output word of Philox4x32-10 with key (seed lo, seed hi) and counter
// (c lo, c hi, 0, 0), c = first + l, for l < count (a multiple of 16): Triton's tl.randint.
void philox_block(uint32_t* bits, int64_t count, uint64_t seed, uint64_t first) {
  constexpr int64_t kLanes = 16;  // the lanes advance through the rounds together: vectorisable
  for (int64_t j0 = 0; j0 < count; j0 += kLanes) {
    uint32_t c0[kLanes], c1[kLanes], c2[kLanes], c3[kLanes];
#pragma omp simd
    for (int64_t l = 0; l < kLanes; ++l) {
      const uint64_t counter = first + static_cast<uint64_t>(j0 + l);
      c0[l] = static_cast<uint32_t>(counter);
      c1[l] = static_cast<uint32_t>(counter >> 32);
      c2[l] = 0;
      c3[l] = 0;
    }
    uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
    for (int round = 0; round < philox::kRounds; ++round) {
#pragma omp simd
      for (int64_t l = 0; l < kLanes; ++l) philox::philox_round(c0[l], c1[l], c2[l], c3[l], k0, k1);
      k0 += philox::kKeyStep0;
      k1 += philox::kKeyStep1;
    }
    for (int64_t l = 0; l < kLanes; ++l) bits[j0 + l] = c0[l];
  }
}

// dst[j] = noise of counter first + j (j < len)
void gumbel_run(float* dst, int64_t len, uint64_t seed, uint64_t first) {
  constexpr int64_t kBlock = 256;
  alignas(64) uint32_t bits[kBlock];
  for (int64_t j0 = 0; j0 < len; j0 += kBlock) {
    const int64_t count = min64(kBlock, len - j0);
    philox_block(bits, round_up(count, 16), seed, first + static_cast<uint64_t>(j0));
    float* out = dst + j0;
#pragma omp simd
    for (int64_t l = 0; l < count; ++l) out[l] = philox::gumbel_from_bits(bits[l]);
  }
}
#endif
