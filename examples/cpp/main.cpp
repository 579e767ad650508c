// fattn from C++: causal SDPA on a small float32 input, checked against the
// textbook formula computed here in double. Exit status 1 if they disagree.
#include <cmath>
#include <cstdio>
#include <vector>

#include "fattn/fattn.hpp"

int main() {
  constexpr std::int64_t B = 1, H = 2, L = 3, D = 4;
  std::vector<float> q(B * H * L * D), k(q.size()), v(q.size()), out(q.size());
  for (std::size_t i = 0; i < q.size(); ++i) {
    q[i] = std::sin(0.7f * float(i));
    k[i] = std::cos(0.3f * float(i));
    v[i] = 0.1f * float(i % 7) - 0.2f;
  }

  fattn::SdpaParams params;  // causal, scale 1/sqrt(D), every key position valid
  fattn::sdpa(fattn::contiguous_view(q.data(), fattn::DType::f32, {B, H, L, D}, false),
              fattn::contiguous_view(k.data(), fattn::DType::f32, {B, H, L, D}, false),
              fattn::contiguous_view(v.data(), fattn::DType::f32, {B, H, L, D}, false),
              fattn::contiguous_view(out.data(), fattn::DType::f32, {B, H, L, D}, true), params);

  // softmax(q k^T / sqrt(D)) v, query i seeing keys 0..i.
  double worst = 0.0;
  for (std::int64_t h = 0; h < H; ++h)
    for (std::int64_t i = 0; i < L; ++i) {
      const auto row = [&](const std::vector<float>& x, std::int64_t l) { return &x[std::size_t((h * L + l) * D)]; };
      std::vector<double> w(std::size_t(i + 1));
      double max_score = -INFINITY, sum = 0.0;
      for (std::int64_t j = 0; j <= i; ++j) {
        double dot = 0.0;
        for (std::int64_t d = 0; d < D; ++d) dot += double(row(q, i)[d]) * double(row(k, j)[d]);
        w[std::size_t(j)] = dot / std::sqrt(double(D));
        max_score = std::fmax(max_score, w[std::size_t(j)]);
      }
      for (auto& x : w) sum += (x = std::exp(x - max_score));
      for (std::int64_t d = 0; d < D; ++d) {
        double expected = 0.0;
        for (std::int64_t j = 0; j <= i; ++j) expected += w[std::size_t(j)] / sum * double(row(v, j)[d]);
        worst = std::fmax(worst, std::fabs(expected - double(row(out, i)[d])));
      }
    }

  std::printf("fattn %s, isa %s: out[0, 1, 2, :] = [%.6f, %.6f, %.6f, %.6f], max |error| vs float64 = %.2e\n",
              fattn::build_info().version.c_str(), fattn::build_info().isa.c_str(), out[20], out[21], out[22],
              out[23], worst);
  if (!(worst < 1e-5)) {
    std::printf("FAILED: error above 1e-5\n");
    return 1;
  }
  std::printf("OK\n");
  return 0;
}
