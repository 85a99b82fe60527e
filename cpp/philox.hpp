// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11).
// A counter-based generator: every draw is a pure function of (key, counter), which is
// what makes sampling independent of how units and cases are split over workers.
#pragma once

#include <cstdint>

namespace parrbm {

struct Philox4x32 {
  static constexpr uint32_t M0 = 0xD2511F53u;
  static constexpr uint32_t M1 = 0xCD9E8D57u;
  static constexpr uint32_t W0 = 0x9E3779B9u;
  static constexpr uint32_t W1 = 0xBB67AE85u;

  // out = Philox4x32-10(counter c, key k)
  static inline void block(const uint32_t c[4], const uint32_t k[2], uint32_t out[4]) {
    uint32_t x0 = c[0], x1 = c[1], x2 = c[2], x3 = c[3];
    uint32_t k0 = k[0], k1 = k[1];
    for (int r = 0; r < 10; ++r) {
      if (r > 0) {
        k0 += W0;
        k1 += W1;
      }
      const uint64_t p0 = uint64_t(M0) * x0;
      const uint64_t p1 = uint64_t(M1) * x2;
      const uint32_t y0 = uint32_t(p1 >> 32) ^ x1 ^ k0;
      const uint32_t y1 = uint32_t(p1);
      const uint32_t y2 = uint32_t(p0 >> 32) ^ x3 ^ k1;
      const uint32_t y3 = uint32_t(p0);
      x0 = y0; x1 = y1; x2 = y2; x3 = y3;
    }
    out[0] = x0; out[1] = x1; out[2] = x2; out[3] = x3;
  }
};

// The stream key of one sampling call. A uniform for (case i, unit j) comes from lane
// j % 4 of the block with counter (j / 4, i, step, phase); see docs/design.md section 3.
struct StreamKey {
  uint64_t seed = 0;
  uint32_t step = 0;
  uint32_t phase = 0;
};

// Phase labels of the draws inside one CD step. Chain step t (1-based) of CD-k uses
// visible phase 2t-1 and hidden phase 2t; the positive hidden draw is phase 0.
// Gaussian visible noise uses a separate range so it never reuses a Bernoulli draw.
constexpr uint32_t kPhasePositiveHidden = 0;
inline uint32_t phase_visible(uint32_t t) { return 2 * t - 1; }
inline uint32_t phase_hidden(uint32_t t) { return 2 * t; }
constexpr uint32_t kPhaseNoiseOffset = 0x10000u;

}  // namespace parrbm
