// Small fp32 GEMM micro-kernels for AVX2 + FMA (included by assign_kernels_impl.h in the AVX2 copy).
//
// The tiles of assignment attention are small (G x chunk x D, e.g. 64 x 196 x 384). One register
// kernel serves all five products: C[m, n0:n0+24] = alpha * sum_k a(m, k) P[k, 0:24], a 4 x 24
// tile (12 accumulators; per k: 3 aligned panel loads, 4 broadcasts of a, 12 FMAs), where P is
// a 24-column panel of op(B) packed contiguously so that its loads stream from L1:
//
//   gemm_nn: op(B) = B[k, n] stored row-major (dq = dz K, dk = dz^T Q, dv = R^T dO, S V): the
//            panel is a row-by-row copy;
//   gemm_nt: op(B) = B[n, k] (logits z = scale * Q K^T, dR = dO V^T): the panel is a transpose,
//            done with 8 x 8 in-register transposes.
// a(m, k) = A[m * sam + k * sak] takes both row- and column-major A without a copy. Panels past N
// are zero-padded and only the valid columns are stored. Both write C (beta = 0). Packing costs
// K x 24 moves per panel against M x K x 24 FMAs; it is what lifts these tiles from about 65 % to
// about 90 % of the FMA peak here. The reduction order is fixed by the shapes (deterministic).
#pragma once

namespace gemm_avx2 {

constexpr int64_t kPanel = 24;  // panel width: 3 vectors

// Floats of packing buffer the calls below need for a depth of K (32-byte aligned buffer).
inline int64_t panel_floats(int64_t K) { return K * kPanel; }

// Lanes [0, count) set, count in [0, 8].
inline __m256i lane_mask(int64_t count) {
  const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int32_t>(count)), iota);
}

template <int MR>
inline __attribute__((always_inline)) void tile(int64_t K, float alpha, const float* A, int64_t sam, int64_t sak,
                                                const float* P, float* C, int64_t ldc, int64_t cols) {
  __m256 acc[MR][3];
  for (int i = 0; i < MR; ++i)
    for (int v = 0; v < 3; ++v) acc[i][v] = _mm256_setzero_ps();
  for (int64_t k = 0; k < K; ++k) {
    const float* p = P + k * kPanel;
    const __m256 b0 = _mm256_load_ps(p), b1 = _mm256_load_ps(p + 8), b2 = _mm256_load_ps(p + 16);
    const float* a = A + k * sak;
    for (int i = 0; i < MR; ++i) {
      const __m256 x = _mm256_broadcast_ss(a + i * sam);
      acc[i][0] = _mm256_fmadd_ps(x, b0, acc[i][0]);
      acc[i][1] = _mm256_fmadd_ps(x, b1, acc[i][1]);
      acc[i][2] = _mm256_fmadd_ps(x, b2, acc[i][2]);
    }
  }
  const __m256 scale = _mm256_set1_ps(alpha);
  for (int i = 0; i < MR; ++i) {
    float* c = C + i * ldc;
    for (int v = 0; v < 3; ++v) {
      const int64_t left = cols - 8 * v;
      if (left <= 0) break;
      const __m256 out = _mm256_mul_ps(acc[i][v], scale);
      if (left >= 8) {
        _mm256_storeu_ps(c + 8 * v, out);
      } else {
        _mm256_maskstore_ps(c + 8 * v, lane_mask(left), out);
      }
    }
  }
}

// C[:, n0 : n0 + cols] for all M rows from a packed panel.
inline void panel_product(int64_t M, int64_t K, float alpha, const float* A, int64_t sam, int64_t sak, const float* P,
                          float* C, int64_t ldc, int64_t cols) {
  int64_t m0 = 0;
  for (; m0 + 4 <= M; m0 += 4) tile<4>(K, alpha, A + m0 * sam, sam, sak, P, C + m0 * ldc, ldc, cols);
  switch (M - m0) {
    case 3: tile<3>(K, alpha, A + m0 * sam, sam, sak, P, C + m0 * ldc, ldc, cols); break;
    case 2: tile<2>(K, alpha, A + m0 * sam, sam, sak, P, C + m0 * ldc, ldc, cols); break;
    case 1: tile<1>(K, alpha, A + m0 * sam, sam, sak, P, C + m0 * ldc, ldc, cols); break;
    default: break;
  }
}

// C[m, n] = alpha * sum_k A[m * sam + k * sak] * B[k * ldb + n]; P: panel_floats(K) floats.
inline void gemm_nn(int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t sam, int64_t sak,
                    const float* B, int64_t ldb, float* C, int64_t ldc, float* P) {
  for (int64_t n0 = 0; n0 < N; n0 += kPanel) {
    const int64_t cols = N - n0 < kPanel ? N - n0 : kPanel;
    if (cols == kPanel) {
      for (int64_t k = 0; k < K; ++k) {
        const float* b = B + k * ldb + n0;
        float* p = P + k * kPanel;
        _mm256_store_ps(p, _mm256_loadu_ps(b));
        _mm256_store_ps(p + 8, _mm256_loadu_ps(b + 8));
        _mm256_store_ps(p + 16, _mm256_loadu_ps(b + 16));
      }
    } else {
      for (int64_t k = 0; k < K; ++k) {
        const float* b = B + k * ldb + n0;
        float* p = P + k * kPanel;
        for (int64_t j = 0; j < kPanel; ++j) p[j] = j < cols ? b[j] : 0.0f;
      }
    }
    panel_product(M, K, alpha, A, sam, sak, P, C + n0, ldc, cols);
  }
}

// out[i] = column i of the 8 x 8 block with rows r[0..7].
inline __attribute__((always_inline)) void transpose8(const __m256 r[8], __m256 out[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  out[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
  out[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
  out[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
  out[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
  out[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
  out[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
  out[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
  out[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

// C[m, n] = alpha * sum_k A[m * lda + k] * B[n * ldb + k]; P: panel_floats(K) floats.
inline void gemm_nt(int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda, const float* B,
                    int64_t ldb, float* C, int64_t ldc, float* P) {
  const int64_t k_main = K / 8 * 8;
  for (int64_t n0 = 0; n0 < N; n0 += kPanel) {
    const int64_t cols = N - n0 < kPanel ? N - n0 : kPanel;
    // P[k, j] = B[n0 + j, k]: 8 x 8 blocks transposed in registers; columns past N are zeros
    for (int64_t j0 = 0; j0 < kPanel; j0 += 8) {
      const int64_t valid = cols - j0 < 0 ? 0 : (cols - j0 > 8 ? 8 : cols - j0);
      const float* b = B + (n0 + j0) * ldb;
      if (valid == 8) {  // the common case: no per-row checks in the loop
        for (int64_t k = 0; k < k_main; k += 8) {
          __m256 r[8], t[8];
          for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(b + i * ldb + k);
          transpose8(r, t);
          for (int i = 0; i < 8; ++i) _mm256_store_ps(P + (k + i) * kPanel + j0, t[i]);
        }
      } else if (valid > 0) {
        for (int64_t k = 0; k < k_main; k += 8) {
          __m256 r[8], t[8];
          for (int i = 0; i < 8; ++i) r[i] = i < valid ? _mm256_loadu_ps(b + i * ldb + k) : _mm256_setzero_ps();
          transpose8(r, t);
          for (int i = 0; i < 8; ++i) _mm256_store_ps(P + (k + i) * kPanel + j0, t[i]);
        }
      } else {
        for (int64_t k = 0; k < k_main; ++k) _mm256_store_ps(P + k * kPanel + j0, _mm256_setzero_ps());
      }
      for (int64_t k = k_main; k < K; ++k) {
        for (int64_t i = 0; i < 8; ++i) P[k * kPanel + j0 + i] = i < valid ? b[i * ldb + k] : 0.0f;
      }
    }
    panel_product(M, K, alpha, A, lda, 1, P, C + n0, ldc, cols);
  }
}

}  // namespace gemm_avx2
