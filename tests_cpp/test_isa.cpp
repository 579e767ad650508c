// Every instruction-set path this CPU has against the scalar model, bit for
// bit, through the C++ API (and so under the sanitizer builds too); the list
// of targets, the dispatch table and the CPU features they are chosen by.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <random>
#include <string>
#include <limits>
#include <thread>
#include <vector>

#include "../cpp/src/numerics/exp.hpp"
#include "../cpp/src/runtime/isa.hpp"
#include "fattn/fattn.hpp"
#include "runtime/cpu_features.hpp"
#include "simd/dispatch.hpp"

using namespace fattn;

namespace {

struct RestoreIsa {
  simd::Isa saved = simd::active_isa();
  ~RestoreIsa() { simd::set_active_isa(saved); }
};

std::vector<std::uint16_t> random_bf16(std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd;
  std::vector<std::uint16_t> out(n);
  for (auto& x : out) x = f32_to_bf16(nd(rng));
  return out;
}

TEST(IsaPaths, PrefillMatchesTheScalarModel) {
  RestoreIsa restore;
  const std::int64_t B = 2, H = 4, Hkv = 2, Lq = 45, Lk = 83, D = 80;
  auto q = random_bf16(std::size_t(B * H * Lq * D), 1), k = random_bf16(std::size_t(B * Hkv * Lk * D), 2),
       v = random_bf16(std::size_t(B * Hkv * Lk * D), 3);
  std::vector<float> mask(std::size_t(Lq * Lk));
  std::mt19937 rng(4);
  for (auto& m : mask) m = (rng() % 4 == 0) ? -INFINITY : float(rng() % 100) / 50.0f;
  MaskView mv;
  mv.data = mask.data();
  mv.shape = {1, 1, Lq, Lk};
  mv.stride = {0, 0, Lk, 1};
  for (PrefillKernel kernel : {PrefillKernel::candle}) {
    for (bool causal : {false, true}) {
      PrefillParams p;
      p.kernel = kernel;
      p.causal = causal;
      std::vector<std::vector<std::uint16_t>> outs;
      std::vector<std::vector<float>> lses;
      for (const std::string& name : simd::available_isas(true)) {
        simd::set_active_isa(simd::isa_from_name(name));
        std::vector<std::uint16_t> out(q.size());
        std::vector<float> lse(std::size_t(B * H * Lq));
        const TensorView lv = contiguous_view(lse.data(), DType::f32, {B, H, Lq, 1}, true);
        flash_attn_prefill(contiguous_view(q.data(), DType::bf16, {B, H, Lq, D}, false),
                           contiguous_view(k.data(), DType::bf16, {B, Hkv, Lk, D}, false),
                           contiguous_view(v.data(), DType::bf16, {B, Hkv, Lk, D}, false),
                           contiguous_view(out.data(), DType::bf16, {B, H, Lq, D}, true), &mv, nullptr, &lv, p);
        outs.push_back(out);
        lses.push_back(lse);
      }
      for (std::size_t i = 1; i < outs.size(); ++i) {
        EXPECT_EQ(outs[i], outs[0]) << simd::available_isas(true)[i] << " causal=" << causal;
        EXPECT_EQ(0, std::memcmp(lses[i].data(), lses[0].data(), lses[0].size() * 4));
      }
    }
  }
}

// Items of several 32-row blocks that take the keys a chunk at a time
// (prefill_rows, prefill_chunk_keys: here 512 keys for f32, 1024 for the
// 16-bit types at D = 32) against the scalar model bit for bit: Lk past a
// chunk and not a multiple of the tile, a last block of 4 rows (the row
// form), GQA, top-left and bottom-right causal with a window, an additive
// mask, softcap and sinks, on 1 thread (4 blocks per item) and 2 (2 per
// item, so that TSan sees grouped items run in parallel).
TEST(IsaPaths, PrefillBlocksSharingKeyChunksMatchTheScalarModel) {
  RestoreIsa restore;
  const int saved_threads = get_num_threads();
  const std::int64_t B = 1, H = 4, Hkv = 2, Lq = 100, Lk = 1100, D = 32;
  std::mt19937 rng(7);
  std::normal_distribution<float> nd;
  std::vector<float> q32(std::size_t(B * H * Lq * D)), k32(std::size_t(B * Hkv * Lk * D)), v32(k32.size());
  for (auto* t : {&q32, &k32, &v32})
    for (auto& x : *t) x = nd(rng);
  std::vector<float> mask(std::size_t(Lq * Lk));
  for (auto& m : mask) m = (rng() % 5 == 0) ? -INFINITY : float(rng() % 100) / 50.0f;
  MaskView mv;
  mv.data = mask.data();
  mv.shape = {1, 1, Lq, Lk};
  mv.stride = {0, 0, Lk, 1};
  for (DType dt : {DType::f32, DType::bf16, DType::f16}) {
    const std::size_t es = dtype_size(dt);
    auto cast = [&](const std::vector<float>& src) {
      std::vector<std::uint8_t> dst(src.size() * es);
      for (std::size_t i = 0; i < src.size(); ++i) {
        if (dt == DType::f32) std::memcpy(&dst[i * 4], &src[i], 4);
        const std::uint16_t h16 = dt == DType::bf16 ? f32_to_bf16(src[i]) : f32_to_f16(src[i]);
        if (dt != DType::f32) std::memcpy(&dst[i * 2], &h16, 2);
      }
      return dst;
    };
    auto q = cast(q32), k = cast(k32), v = cast(v32);
    for (int variant = 0; variant < 4; ++variant) {
      PrefillParams p;
      p.causal = variant >= 1;
      if (variant == 2) p.causal_align = CausalAlign::bottom_right;
      if (variant == 3) {
        p.window = 300;
        p.softcap = 20.0f;
        p.sinks = {0.5f, -1.0f, 0.0f, 2.0f};
        p.q_offset = 700;
      }
      const MaskView* m = variant == 1 ? &mv : nullptr;
      for (int threads : {1, 2}) {
        set_num_threads(threads);
        std::vector<std::vector<std::uint8_t>> outs;
        for (const std::string& name : simd::available_isas(true)) {
          simd::set_active_isa(simd::isa_from_name(name));
          std::vector<std::uint8_t> out(q.size());
          flash_attn_prefill(contiguous_view(q.data(), dt, {B, H, Lq, D}, false),
                             contiguous_view(k.data(), dt, {B, Hkv, Lk, D}, false),
                             contiguous_view(v.data(), dt, {B, Hkv, Lk, D}, false),
                             contiguous_view(out.data(), dt, {B, H, Lq, D}, true), m, nullptr, nullptr, p);
          outs.push_back(out);
        }
        for (std::size_t i = 1; i < outs.size(); ++i)
          EXPECT_EQ(outs[i], outs[0]) << simd::available_isas(true)[i] << " dtype " << int(dt) << " variant "
                                      << variant << " threads " << threads;
      }
    }
  }
  set_num_threads(saved_threads);
}

// Each path's exp2 and exp against the scalar model's (numerics/exp.hpp), bit
// for bit: every f32 within 2 of both functions' underflow and overflow
// edges (exp2: -150 and 128; exp: -104 and 88.72; either sign), where
// AVX-512 scales by 2^n in one instruction instead of two multiplies and the
// special cases take over, every 4099th bit pattern (NaN payloads included),
// and the special values.
TEST(IsaPaths, ExpIsTheScalarModelsEverywhere) {
  std::vector<std::uint32_t> bits;
  for (float edge : {150.0f, 128.0f, 104.0f, 88.72283935546875f})
    for (std::uint32_t sign : {0u, 0x80000000u}) {
      const float lo = edge - 2.0f, hi = edge + 2.0f;
      std::uint32_t from, to;
      std::memcpy(&from, &lo, 4);
      std::memcpy(&to, &hi, 4);
      for (std::uint32_t m = from; m <= to; ++m) bits.push_back(sign | m);
    }
  for (std::uint64_t u = 0; u < (std::uint64_t(1) << 32); u += 4099) bits.push_back(std::uint32_t(u));
  for (std::uint32_t special : {0x00000000u, 0x80000000u, 0x7f800000u, 0xff800000u, 0x7fc00000u, 0xffc00001u,
                                0x7f800001u, 0xff812345u, 0x00000001u, 0x807fffffu, 0x7f7fffffu, 0xff7fffffu})
    bits.push_back(special);
  std::vector<float> x(bits.size());
  std::memcpy(x.data(), bits.data(), bits.size() * 4);
  for (bool natural : {false, true}) {
    std::vector<float> want(x.size()), got(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) want[i] = natural ? simd::exp_f32(x[i]) : simd::exp2_f32(x[i]);
    for (const std::string& name : simd::available_isas(true)) {
      if (name == "scalar") continue;
      simd::vector_kernels(simd::isa_from_name(name)).exp_row(x.data(), got.data(), x.size(), natural);
      std::size_t first_off = x.size();
      for (std::size_t i = 0; i < x.size() && first_off == x.size(); ++i)
        if (std::memcmp(&got[i], &want[i], 4) != 0) first_off = i;
      EXPECT_EQ(first_off, x.size()) << name << (natural ? " exp" : " exp2") << " differs at x bits 0x" << std::hex
                                     << (first_off < x.size() ? bits[first_off] : 0u);
    }
  }
}

TEST(IsaPaths, SdpaMatchesTheScalarModel) {
  RestoreIsa restore;
  // 45 rows: a full block of 32 and a ragged one; causal rows start 2 keys in.
  const std::int64_t B = 1, H = 4, Hkv = 2, Lq = 45, cap = 50, D = 40;
  auto q = random_bf16(std::size_t(B * H * Lq * D), 8), k = random_bf16(std::size_t(B * Hkv * cap * D), 9),
       v = random_bf16(std::size_t(B * Hkv * cap * D), 10);
  // The same values in f32 (q times 3: scores of a few units), whose f32 outputs show a
  // difference of one ulp in a score that a bf16 output would round away.
  std::vector<float> q32(q.size()), k32(k.size()), v32(v.size());
  for (std::size_t i = 0; i < q.size(); ++i) q32[i] = 3.0f * bf16_to_f32(q[i]);
  for (std::size_t i = 0; i < k.size(); ++i) k32[i] = bf16_to_f32(k[i]), v32[i] = bf16_to_f32(v[i]);
  // Plain, causal, and issue 19's options: a softcap, windows starting inside a block of 32
  // rows (some lanes masked) and of one key, sinks (head 1 none), bottom-right and top-left.
  std::vector<SdpaParams> variants(8);
  variants[0].causal = false;
  variants[2].softcap = 3.0f;
  variants[3].window = 7;
  variants[4].window = 1;
  variants[4].causal_align = CausalAlign::top_left;
  variants[5].sinks = {0.5f, -INFINITY, 2.0f, -1.0f};
  variants[6].softcap = 1.25f, variants[6].window = 20, variants[6].sinks = {3.0f, -INFINITY, 0.0f, 1.0f};
  variants[7] = variants[6];
  variants[7].causal_align = CausalAlign::top_left;
  for (std::size_t n = 0; n < variants.size(); ++n) {
    SdpaParams p = variants[n];
    p.kv_seq_len = 47;
    for (DType dt : {DType::bf16, DType::f32}) {
      const bool f32 = dt == DType::f32;
      std::vector<std::vector<std::uint8_t>> outs;
      for (const std::string& name : simd::available_isas(true)) {
        simd::set_active_isa(simd::isa_from_name(name));
        std::vector<std::uint8_t> out(q.size() * dtype_size(dt));
        sdpa(contiguous_view(f32 ? static_cast<void*>(q32.data()) : q.data(), dt, {B, H, Lq, D}, false),
             contiguous_view(f32 ? static_cast<void*>(k32.data()) : k.data(), dt, {B, Hkv, cap, D}, false),
             contiguous_view(f32 ? static_cast<void*>(v32.data()) : v.data(), dt, {B, Hkv, cap, D}, false),
             contiguous_view(out.data(), dt, {B, H, Lq, D}, true), p);
        outs.push_back(out);
      }
      for (std::size_t i = 1; i < outs.size(); ++i)
        EXPECT_EQ(outs[i], outs[0]) << simd::available_isas(true)[i] << " variant " << n << " " << dtype_name(dt);
    }
  }
}

TEST(IsaPaths, DecodeMatchesTheScalarModel) {
  RestoreIsa restore;
  const std::int64_t B = 1, H = 8, Hkv = 2, cap = 300, D = 96;
  std::vector<float> q(std::size_t(B * H * D));
  std::mt19937 rng(5);
  std::normal_distribution<float> nd;
  for (auto& x : q) x = nd(rng);
  auto k = random_bf16(std::size_t(B * Hkv * cap * D), 6), v = random_bf16(std::size_t(B * Hkv * cap * D), 7);
  DecodeParams p;
  p.kv_seq_len = 290;
  p.nwg = 5;
  p.mask = DecodeMask::sliding_window;
  p.window = 200;
  DecodeParams extras = p;  // sinks (one -inf) and a ring whose end falls inside a chunk
  extras.sinks = {0.5f, -std::numeric_limits<float>::infinity(), 3.0f, -2.0f, 40.0f, -30.0f, 0.0f, 1.5f};
  extras.ring_start = 250;
  for (const DecodeParams& params : {p, extras}) {
    std::vector<std::vector<float>> outs;
    for (const std::string& name : simd::available_isas(true)) {
      simd::set_active_isa(simd::isa_from_name(name));
      std::vector<float> out(q.size());
      flash_attn_vec(contiguous_view(q.data(), DType::f32, {B, H, 1, D}, false),
                     contiguous_view(k.data(), DType::bf16, {B, Hkv, cap, D}, false),
                     contiguous_view(v.data(), DType::bf16, {B, Hkv, cap, D}, false),
                     contiguous_view(out.data(), DType::f32, {B, H, 1, D}, true), params);
      outs.push_back(out);
    }
    for (std::size_t i = 1; i < outs.size(); ++i)
      EXPECT_EQ(0, std::memcmp(outs[i].data(), outs[0].data(), outs[0].size() * 4)) << simd::available_isas(true)[i];
  }
}

// Quantized caches (q8_0, q4_0), alone or mixed with a dense f16 one, on
// every path: the decode of the dequantized f32 caches (dequantize_kv) on
// the scalar model, bit for bit. A ring whose end falls inside a chunk,
// sinks, a window, GQA and a kv_seq_len that is no multiple of 32.
TEST(IsaPaths, DecodeOnQuantizedCachesIsTheDequantizedCachesBits) {
  RestoreIsa restore;
  const std::int64_t B = 2, H = 8, Hkv = 2, cap = 300, D = 128;
  std::mt19937 rng(8);
  std::normal_distribution<float> nd;
  std::vector<float> q(std::size_t(B * H * D)), k(std::size_t(B * Hkv * cap * D)), v(k.size());
  for (auto* x : {&q, &k, &v})
    for (auto& e : *x) e = nd(rng);
  const std::array<std::int64_t, 4> shape{B, Hkv, cap, D};
  // Each cache in three forms: q8_0, q4_0 and f16 (a dense cache alongside a quantized one), with the
  // f32 values each stands for.
  struct Form {
    CacheView view;
    std::vector<float> values;
  };
  std::vector<std::vector<std::uint8_t>> bytes;
  std::vector<std::vector<std::uint16_t>> halves;
  const auto forms = [&](std::vector<float>& x) {
    std::vector<Form> out;
    const TensorView xv = contiguous_view(x.data(), DType::f32, shape, false);
    for (QuantFormat f : {QuantFormat::q8_0, QuantFormat::q4_0}) {
      bytes.emplace_back(std::size_t(B * Hkv * cap * quant_row_bytes(f, D)));
      const QuantView qv = contiguous_quant_view(bytes.back().data(), f, shape, true);
      quantize_kv(xv, qv);
      std::vector<float> values(x.size());
      dequantize_kv(qv, contiguous_view(values.data(), DType::f32, shape, true));
      out.push_back({qv, values});
    }
    halves.emplace_back(x.size());
    from_f32(DType::f16, x.data(), halves.back().data(), std::int64_t(x.size()));
    std::vector<float> values(x.size());
    to_f32(DType::f16, halves.back().data(), values.data(), std::int64_t(x.size()));
    out.push_back({contiguous_view(halves.back().data(), DType::f16, shape, false), values});
    return out;
  };
  bytes.reserve(8);
  halves.reserve(4);
  const std::vector<Form> ks = forms(k), vs = forms(v);
  DecodeParams p;
  p.kv_seq_len = 290;
  p.nwg = 5;
  p.mask = DecodeMask::sliding_window;
  p.window = 200;
  p.sinks = {0.5f, -std::numeric_limits<float>::infinity(), 3.0f, -2.0f, 40.0f, -30.0f, 0.0f, 1.5f};
  p.ring_start = 250;
  const TensorView qv = contiguous_view(q.data(), DType::f32, {B, H, 1, D}, false);
  int compared = 0;
  for (std::size_t i = 0; i < ks.size(); ++i)
    for (std::size_t j = 0; j < vs.size(); ++j) {
      if (!ks[i].view.quantized() && !vs[j].view.quantized()) continue;  // dense only: the other tests'
      simd::set_active_isa(simd::Isa::scalar);
      std::vector<float> want(q.size());
      std::vector<float> kf = ks[i].values, vf = vs[j].values;
      flash_attn_vec(qv, contiguous_view(kf.data(), DType::f32, shape, false),
                     contiguous_view(vf.data(), DType::f32, shape, false),
                     contiguous_view(want.data(), DType::f32, {B, H, 1, D}, true), p);
      for (const std::string& name : simd::available_isas(true)) {
        simd::set_active_isa(simd::isa_from_name(name));
        std::vector<float> got(q.size(), -1.0f);
        flash_attn_vec(qv, ks[i].view, vs[j].view, contiguous_view(got.data(), DType::f32, {B, H, 1, D}, true), p);
        EXPECT_EQ(0, std::memcmp(got.data(), want.data(), want.size() * 4)) << name << " K form " << i << " V form " << j;
        ++compared;
      }
    }
  EXPECT_EQ(compared, 8 * int(simd::available_isas(true).size()));
}

struct TargetEntry {
  simd::Isa isa;
  std::string name, features;
  bool emulated;
};

const std::vector<TargetEntry>& targets() {
  static const std::vector<TargetEntry> list = {
#define FATTN_X(id, code, traits, features, kind) \
  {simd::Isa::id, #id, features, simd::TargetKind::kind == simd::TargetKind::emulated},
      FATTN_VECTOR_TARGETS(FATTN_X)
#undef FATTN_X
  };
  return list;
}

bool available(const std::string& name) {
  const auto names = simd::available_isas(true);
  return std::find(names.begin(), names.end(), name) != names.end();
}

// A typo in a target's features would make it never run, silently.
TEST(Targets, NameOnlyFeaturesTheCpuCheckKnows) {
  for (const TargetEntry& t : targets()) {
    std::string rest = t.features;
    for (std::size_t comma; (comma = rest.find(',')) != std::string::npos; rest.erase(0, comma + 1))
      EXPECT_TRUE(simd::CpuFeatures::known(rest.substr(0, comma))) << t.name << ": " << rest.substr(0, comma);
    EXPECT_TRUE(simd::CpuFeatures::known(rest)) << t.name << ": " << rest;
  }
}

TEST(Targets, NamesAndCodesRoundTrip) {
  EXPECT_EQ(simd::isa_from_name("scalar"), simd::Isa::scalar);
  for (const TargetEntry& t : targets()) {
    EXPECT_EQ(simd::isa_name(t.isa), t.name);
    EXPECT_EQ(simd::isa_from_name(t.name), t.isa);
    EXPECT_NE(int(t.isa), int(simd::Isa::scalar));
  }
}

// A target is available exactly where this build has it and the CPU has its
// features; one that is not can never be selected, and the refusal leaves the
// active path alone.
TEST(Targets, OnlyTheOnesThisBuildAndCpuRunCanBeChosen) {
  RestoreIsa restore;
  for (const TargetEntry& t : targets()) {
    const bool runs = FATTN_SIMD_X86 && simd::cpu_features().has_all(t.features);
    EXPECT_EQ(available(t.name), runs) << t.name;
    EXPECT_EQ(simd::can_run(t.isa), runs) << t.name;
    simd::set_active_isa(simd::Isa::scalar);
    if (!runs) {
      EXPECT_THROW(simd::set_active_isa(t.isa), InvalidArgument) << t.name;
      EXPECT_EQ(simd::active_isa(), simd::Isa::scalar);
      continue;
    }
    simd::set_active_isa(t.isa);
    EXPECT_EQ(build_info().isa, t.name);
    const simd::VectorKernels& row = simd::vector_kernels(t.isa);
    for (int d = 0; d < simd::VectorKernels::kDTypes; ++d) {
      EXPECT_NE(row.prefill[d][0], nullptr) << t.name;
      EXPECT_NE(row.prefill[d][1], nullptr) << t.name;
      EXPECT_NE(row.decode[d][d], nullptr) << t.name;  // and a quantized (read as f32) K or V with it
      EXPECT_NE(row.decode[d][int(DType::f32)], nullptr) << t.name;
      EXPECT_NE(row.decode[int(DType::f32)][d], nullptr) << t.name;
      EXPECT_NE(row.sdpa[d], nullptr) << t.name;
    }
    EXPECT_NE(row.merge_row, nullptr) << t.name;
    EXPECT_NE(row.exp_row, nullptr) << t.name;
  }
  const auto native = simd::available_isas(), all = simd::available_isas(true);
  ASSERT_FALSE(native.empty());
  EXPECT_EQ(native.front(), "scalar");
  EXPECT_EQ(native.back(), simd::isa_name(simd::best_isa()));
  EXPECT_TRUE(std::equal(native.begin(), native.end(), all.begin()));
  for (const TargetEntry& t : targets())
    if (t.emulated) EXPECT_EQ(std::count(native.begin(), native.end(), t.name), 0) << t.name;
}

// The build that compiles the vector paths has them where the CPU can run
// them: a build that lost its simd/ files fails here, not only on speed.
TEST(Targets, Avx2IsThereWhereTheCpuHasIt) {
  if (!FATTN_SIMD_X86) {
    EXPECT_EQ(simd::available_isas(true), std::vector<std::string>{"scalar"});
    GTEST_SKIP() << "built without the vector paths (FATTN_SIMD off or not x86-64)";
  }
  if (!simd::cpu_features().has_all(FATTN_ISA_AVX2)) GTEST_SKIP() << "this CPU has no AVX2 + FMA + F16C";
  EXPECT_TRUE(available("avx2"));
  EXPECT_TRUE(available("avx512_emulated"));
  EXPECT_NE(simd::best_isa(), simd::Isa::scalar);
}

TEST(CpuFeatures, BuildInfoReportsTheDetectedOnes) {
  const simd::CpuFeatures& cpu = simd::cpu_features();
  std::vector<std::string> expected;
  for (const char* name : {"avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512bf16"})
    if (cpu.has(name)) expected.push_back(name);
  EXPECT_EQ(build_info().cpu_features, expected);
  EXPECT_EQ(&cpu, &simd::cpu_features());  // detected once
  EXPECT_FALSE(cpu.has("sse9"));
  EXPECT_FALSE(simd::CpuFeatures::known("sse9"));
  EXPECT_EQ(cpu.has_all("avx2,fma"), cpu.avx2 && cpu.fma);
#if defined(__x86_64__)
  EXPECT_GT(cpu.family, 0);
  EXPECT_FALSE(cpu.brand.empty());
#endif
}

// The path a family runs: the fixed setting, or under auto a native path the
// CPU runs (measured); ForcedIsa overrides it on its own thread only.
TEST(IsaChoice, FixedAutoAndForced) {
  RestoreIsa restore;
  simd::set_active_isa(simd::Isa::scalar);
  EXPECT_FALSE(simd::isa_is_auto());
  EXPECT_EQ(simd::isa_setting(), "scalar");
  for (int f = 0; f < simd::kFamilies; ++f) EXPECT_EQ(simd::isa_for(simd::Family(f)), simd::Isa::scalar);
  simd::set_isa_auto();
  EXPECT_TRUE(simd::isa_is_auto());
  const auto native = simd::available_isas(false);
  for (int f = 0; f < simd::kFamilies; ++f) {
    const std::string chosen = simd::isa_name(simd::isa_for(simd::Family(f)));
    EXPECT_NE(std::find(native.begin(), native.end(), chosen), native.end()) << chosen;
    if (native.size() > 1) EXPECT_NE(chosen, "scalar");
  }
  {
    const simd::ForcedIsa forced(simd::Isa::scalar);
    EXPECT_EQ(simd::isa_for(simd::Family::prefill), simd::Isa::scalar);
    simd::Isa other_thread = simd::Isa::scalar;
    std::thread([&] { other_thread = simd::isa_for(simd::Family::prefill); }).join();
    if (native.size() > 1) EXPECT_NE(other_thread, simd::Isa::scalar);
  }
  if (native.size() > 1) EXPECT_NE(simd::isa_for(simd::Family::prefill), simd::Isa::scalar);
  const BuildInfo info = build_info();
  EXPECT_EQ(info.isa, "auto");
  ASSERT_EQ(info.isa_paths.size(), std::size_t(simd::kFamilies));
  EXPECT_EQ(info.isa_paths[0].first, "prefill");
  EXPECT_NE(info.isa_reason.find("auto"), std::string::npos);
}

}  // namespace
