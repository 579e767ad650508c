// The bad-input matrix: one row per bad call of a public C++ function, each
// expected to throw fattn's exception (InvalidDType for a type problem,
// InvalidArgument otherwise) with a message that names the argument, before
// any output is written. Rows marked "regression" are bugs found by fuzzing
// (tests_cpp/fuzz) or review: overflow, unknown enum codes, UB on bad input.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "fattn/fattn.hpp"
#include "../cpp/src/runtime/isa.hpp"

using namespace fattn;

namespace {

constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max();
constexpr std::int64_t kMin = std::numeric_limits<std::int64_t>::min();
constexpr std::int64_t kBig = std::int64_t(1) << 40;

// Good arguments for every function; each row breaks one thing. Outputs
// start as a NaN pattern that a rejected call must leave alone.
struct Fixture {
  static constexpr std::uint32_t kSentinel = 0x7fc0dead;
  // sdpa / prefill: q, out [1, 4, 3, 64]; k, v [1, 2, 5, 64]; mask [Lq=3, Lk=5].
  std::vector<float> q = std::vector<float>(4 * 3 * 64, 0.5f), k = std::vector<float>(2 * 5 * 64, 0.25f),
                     v = std::vector<float>(2 * 5 * 64, 1.0f), out = sentinel(4 * 3 * 64),
                     lse = sentinel(4 * 3), mask = std::vector<float>(3 * 5, 0.0f);
  std::vector<std::uint8_t> blk = std::vector<std::uint8_t>(1, 1), blk_out = std::vector<std::uint8_t>(4, 9);
  // decode: q1, out1 [1, 4, 1, 64]; cache [1, 2, 10, 64]; partials for nwg = 4.
  std::vector<float> q1 = std::vector<float>(4 * 64, 0.5f), cache = std::vector<float>(2 * 10 * 64, 0.5f),
                     out1 = sentinel(4 * 64), o = sentinel(4 * 4 * 64), s = sentinel(4 * 4), m = sentinel(4 * 4);

  TensorView qv = contiguous_view(q.data(), DType::f32, {1, 4, 3, 64}, false);
  TensorView kv = contiguous_view(k.data(), DType::f32, {1, 2, 5, 64}, false);
  TensorView vv = contiguous_view(v.data(), DType::f32, {1, 2, 5, 64}, false);
  TensorView ov = contiguous_view(out.data(), DType::f32, {1, 4, 3, 64}, true);
  TensorView lv = contiguous_view(lse.data(), DType::f32, {1, 4, 3, 1}, true);
  MaskView mv = rank2(mask.data());
  BlkView bv{blk.data(), 1, 1};
  SdpaParams sp;
  PrefillParams pp;

  TensorView q1v = contiguous_view(q1.data(), DType::f32, {1, 4, 1, 64}, false);
  TensorView cv = contiguous_view(cache.data(), DType::f32, {1, 2, 10, 64}, false);
  TensorView o1v = contiguous_view(out1.data(), DType::f32, {1, 4, 1, 64}, true);
  TensorView opv = contiguous_view(o.data(), DType::f32, {1, 4, 4, 64}, true);
  TensorView spv = contiguous_view(s.data(), DType::f32, {1, 4, 4, 1}, true);
  TensorView mpv = contiguous_view(m.data(), DType::f32, {1, 4, 4, 1}, true);
  DecodeParams dp = decode_params();

  static std::vector<float> sentinel(std::size_t n) {
    std::vector<float> x(n);
    for (auto& f : x) std::memcpy(&f, &kSentinel, 4);
    return x;
  }
  static MaskView rank2(const float* data) {
    MaskView mk;
    mk.data = data;
    mk.shape = {1, 1, 3, 5};
    mk.stride = {0, 0, 5, 1};
    return mk;
  }
  static DecodeParams decode_params() {
    DecodeParams p;
    p.kv_seq_len = 7;
    p.nwg = 4;
    return p;
  }
  bool outputs_untouched() const {
    for (const auto* buf : {&out, &lse, &out1, &o, &s, &m})
      for (float f : *buf)
        if (std::memcmp(&f, &kSentinel, 4) != 0) return false;
    for (auto b : blk_out)
      if (b != 9) return false;
    return true;
  }

  void sdpa_call() { sdpa(qv, kv, vv, ov, sp); }
  void prefill_call(bool with_mask = false, bool with_blk = false, bool with_lse = false) {
    flash_attn_prefill(qv, kv, vv, ov, with_mask ? &mv : nullptr, with_blk ? &bv : nullptr,
                       with_lse ? &lv : nullptr, pp);
  }
  void blk_call(PrefillGeometry g = {32, 16}, std::int64_t rows = 1, std::int64_t cols = 1) {
    flash_attn_prefill_blk(mv, pp.kernel, g, blk_out.data(), rows, cols);
  }
  void vec_call() { flash_attn_vec(q1v, cv, cv, o1v, dp); }
  // A q8_0 K cache [1, 2, 10, 64] with the dense V cache.
  std::vector<std::uint8_t> qcache = std::vector<std::uint8_t>(2 * 10 * 68, 0);
  QuantView qcv = contiguous_quant_view(qcache.data(), QuantFormat::q8_0, {1, 2, 10, 64}, false);
  void quant_call() { flash_attn_vec(q1v, qcv, cv, o1v, dp); }
  void partials_call() { flash_attn_vec_partials(q1v, cv, cv, opv, spv, mpv, dp); }
  void reduce_call() { flash_attn_vec_reduce(opv, spv, mpv, o1v); }
};

enum class Err { argument, dtype };

struct Case {
  const char* name;  // test name suffix
  Err err;
  const char* fragment;  // must appear in what()
  std::function<void(Fixture&)> call;
};

TensorView with_shape(TensorView t, int axis, std::int64_t extent) {
  t.shape[std::size_t(axis)] = extent;
  return t;
}
TensorView with_stride(TensorView t, int axis, std::int64_t stride) {
  t.stride[std::size_t(axis)] = stride;
  return t;
}
TensorView with_dtype(TensorView t, DType dt) {
  t.dtype = dt;
  return t;
}
const DType kBadDType = static_cast<DType>(7);

const std::vector<Case>& cases() {
  static const std::vector<Case> table = {
      // --- views -------------------------------------------------------------
      {"ContiguousViewOverflow_regression", Err::argument, "contiguous_view: shape",
       [](Fixture& f) { contiguous_view(f.q.data(), DType::f32, {1, kBig, kBig, 64}, false); }},
      {"ContiguousViewOverflowOuter_regression", Err::argument, "contiguous_view: shape",
       [](Fixture& f) { contiguous_view(f.q.data(), DType::f32, {1, kBig, 1 << 20, 1 << 10}, false); }},
      {"SeqMajorViewOverflow_regression", Err::argument, "seq_major_view: shape",
       [](Fixture& f) { seq_major_view(f.q.data(), DType::f32, {1, kBig, kBig, 64}, false); }},
      {"ViewNegativeExtent", Err::argument, "q: every extent must be > 0, got H = -1",
       [](Fixture& f) { validate_view(with_shape(f.qv, 1, -1), "q"); }},
      {"ViewCountOverflow", Err::argument, "q: element count overflows 64 bits",
       [](Fixture& f) { validate_view(with_shape(with_shape(f.qv, 0, kBig), 1, kBig), "q"); }},
      {"ViewNullData", Err::argument, "k: data pointer is null",
       [](Fixture& f) {
         TensorView t = f.kv;
         t.data = nullptr;
         validate_view(t, "k");
       }},
      {"ViewUnknownDType_regression", Err::dtype, "q: unknown dtype code 7",
       [](Fixture& f) { validate_view(with_dtype(f.qv, kBadDType), "q"); }},
      {"ViewDNotContiguous", Err::argument, "v: the head dimension D must be contiguous",
       [](Fixture& f) { validate_view(with_stride(f.vv, 3, 2), "v"); }},
      {"ViewStrideInt64Min_regression", Err::argument, "q: strides",
       [](Fixture& f) { validate_view(with_stride(f.qv, 1, kMin), "q"); }},
      {"ViewStrideOverflow", Err::argument, "q: strides",
       [](Fixture& f) { validate_view(with_stride(f.qv, 2, kMax / 2), "q"); }},
      {"ViewByteOffsetOverflow", Err::argument, "q: strides",
       [](Fixture& f) { validate_view(with_stride(f.qv, 2, kMax / 4), "q"); }},
      // --- masks ---------------------------------------------------------------
      {"MaskUnknownKind_regression", Err::argument, "mask: unknown mask kind code 5",
       [](Fixture& f) {
         f.mv.kind = static_cast<MaskKind>(5);
         f.prefill_call(true);
       }},
      {"MaskUnknownDType_regression", Err::dtype, "mask: unknown dtype code 7",
       [](Fixture& f) {
         f.mv.dtype = kBadDType;
         f.prefill_call(true);
       }},
      {"MaskWrongExtent", Err::argument, "mask: extent Lq must be 3",
       [](Fixture& f) {
         f.mv.shape[2] = 4;
         f.prefill_call(true);
       }},
      {"MaskZeroBroadcastExtent", Err::argument, "mask: extent B must be 1",
       [](Fixture& f) {
         f.mv.shape[0] = 0;
         f.prefill_call(true);
       }},
      {"MaskNull", Err::argument, "mask: data pointer is null",
       [](Fixture& f) {
         f.mv.data = nullptr;
         f.prefill_call(true);
       }},
      {"MaskStrideOverflow_regression", Err::argument, "mask: strides",
       [](Fixture& f) {
         f.mv.stride[2] = kMin;
         f.prefill_call(true);
       }},
      // --- dtype helpers ---------------------------------------------------------
      {"DtypeSizeUnknown_regression", Err::dtype, "dtype: unknown dtype code 7",
       [](Fixture&) { dtype_size(kBadDType); }},
      {"ToF32UnknownDType_regression", Err::dtype, "to_f32: src_type: unknown dtype code 7",
       [](Fixture& f) { to_f32(kBadDType, f.q.data(), f.out.data(), 4); }},
      {"FromF32NegativeCount", Err::argument, "from_f32: n must be >= 0",
       [](Fixture& f) { from_f32(DType::f16, f.q.data(), f.out.data(), -1); }},
      {"FromF32Null", Err::argument, "from_f32: src and dst must not be null",
       [](Fixture& f) { from_f32(DType::f16, f.q.data(), nullptr, 4); }},
      // --- sdpa ----------------------------------------------------------------
      {"SdpaZeroLength", Err::argument, "q: every extent must be > 0, got L = 0",
       [](Fixture& f) {
         f.qv = with_shape(f.qv, 2, 0);
         f.sdpa_call();
       }},
      {"SdpaMixedDTypes", Err::dtype, "v: dtype must match q (float32), got float16",
       [](Fixture& f) {
         f.vv.dtype = DType::f16;
         f.sdpa_call();
       }},
      {"SdpaUnknownDType_regression", Err::dtype, "q: unknown dtype code 7",
       [](Fixture& f) {
         f.qv.dtype = f.kv.dtype = f.vv.dtype = f.ov.dtype = kBadDType;
         f.sdpa_call();
       }},
      {"SdpaGqa", Err::argument, "H (4) must be divisible by the number of K/V heads H_kv (3)",
       [](Fixture& f) {
         f.kv = with_shape(f.kv, 1, 3);
         f.vv = with_shape(f.vv, 1, 3);
         f.sdpa_call();
       }},
      {"SdpaBatch", Err::argument, "k: batch size B (q.shape[0]) must be 1, got 2",
       [](Fixture& f) {
         f.kv = with_shape(with_stride(f.kv, 0, 0), 0, 2);
         f.sdpa_call();
       }},
      {"SdpaHeadDim", Err::argument, "k: head dim D (q.shape[3]) must be 64, got 32",
       [](Fixture& f) {
         f.kv = with_shape(f.kv, 3, 32);
         f.sdpa_call();
       }},
      {"SdpaVShape", Err::argument, "v: shape must equal k's",
       [](Fixture& f) {
         f.vv = with_shape(f.vv, 2, 4);
         f.sdpa_call();
       }},
      {"SdpaOutReadOnly", Err::argument, "out: must be writable",
       [](Fixture& f) {
         f.ov.writable = false;
         f.sdpa_call();
       }},
      {"SdpaOutStrideZero", Err::argument, "out: its elements overlap",
       [](Fixture& f) {
         f.ov.stride[2] = 0;  // three rows written to one place by different threads
         f.sdpa_call();
       }},
      {"SdpaOutInterleaved", Err::argument, "out: its elements overlap",
       [](Fixture& f) {
         f.ov.stride[1] = 32;  // head h + 1 starts in the middle of head h's first row
         f.sdpa_call();
       }},
      {"PrefillLseOverlap", Err::argument, "lse: its elements overlap",
       [](Fixture& f) {
         f.lv.stride[2] = 0;
         f.prefill_call(false, false, true);
       }},
      {"SdpaKvSeqLenOverCapacity", Err::argument, "kv_seq_len: must be <= the K/V capacity (k.shape[2] = 5), got 6",
       [](Fixture& f) {
         f.sp.kv_seq_len = 6;
         f.sdpa_call();
       }},
      {"SdpaKvSeqLenNegative", Err::argument, "kv_seq_len: must be >= 1, got -2",
       [](Fixture& f) {
         f.sp.kv_seq_len = -2;
         f.sdpa_call();
       }},
      {"SdpaScaleNaN", Err::argument, "scale: must be finite",
       [](Fixture& f) {
         f.sp.scale = std::nanf("");
         f.sdpa_call();
       }},
      {"SdpaScaleInf", Err::argument, "scale: must be finite",
       [](Fixture& f) {
         f.sp.scale = std::numeric_limits<float>::infinity();
         f.sdpa_call();
       }},
      {"SdpaSoftcapNegative", Err::argument, "softcap: must be finite and >= 0 (0 = off), got -1",
       [](Fixture& f) {
         f.sp.softcap = -1.0f;
         f.sdpa_call();
       }},
      {"SdpaSoftcapNaN", Err::argument, "softcap: must be finite and >= 0",
       [](Fixture& f) {
         f.sp.softcap = std::nanf("");
         f.sdpa_call();
       }},
      {"SdpaSoftcapInf", Err::argument, "softcap: must be finite and >= 0",
       [](Fixture& f) {
         f.sp.softcap = std::numeric_limits<float>::infinity();
         f.sdpa_call();
       }},
      {"SdpaWindowZero", Err::argument, "window: must be >= 1 (None = no window), got 0",
       [](Fixture& f) {
         f.sp.window = 0;
         f.sdpa_call();
       }},
      {"SdpaWindowMostNegative", Err::argument, "window: must be >= 1 (None = no window), got -9223372036854775808",
       [](Fixture& f) {
         f.sp.window = std::numeric_limits<std::int64_t>::min();
         f.sdpa_call();
       }},
      {"SdpaWindowWithoutCausal", Err::argument, "window: requires causal",
       [](Fixture& f) {
         f.sp.window = 2;
         f.sp.causal = false;
         f.sdpa_call();
       }},
      {"SdpaSinksPerKvHead", Err::argument, "sinks: expected one per query head (length H = 4), got length 2",
       [](Fixture& f) {
         f.sp.sinks = {0.0f, 0.0f};
         f.sdpa_call();
       }},
      {"SdpaSinksNaN", Err::argument, "sinks: must be finite or -inf (no sink), got nan for head 3",
       [](Fixture& f) {
         f.sp.sinks = {0.0f, 1.0f, 2.0f, std::nanf("")};
         f.sdpa_call();
       }},
      {"SdpaSinksPlusInf", Err::argument, "sinks: must be finite or -inf (no sink), got inf for head 1",
       [](Fixture& f) {
         f.sp.sinks = {0.0f, std::numeric_limits<float>::infinity(), 2.0f, 3.0f};
         f.sdpa_call();
       }},
      // --- prefill -------------------------------------------------------------
      {"PrefillUnknownKernel_regression", Err::argument, "kernel: unknown kernel code 9",
       [](Fixture& f) {
         f.pp.kernel = static_cast<PrefillKernel>(9);
         f.prefill_call();
       }},
      {"PrefillNsg", Err::argument, "nsg: must be 4 or 8, got 16",
       [](Fixture& f) {
         f.pp.nsg = 16;
         f.prefill_call();
       }},
      {"PrefillLlamacppNeedsD512", Err::argument, "head dim D must be 512 for kernel='llamacpp'",
       [](Fixture& f) {
         f.pp.kernel = PrefillKernel::llamacpp;
         f.prefill_call();
       }},
      {"PrefillKTile", Err::argument, "k_tile: must be a power of two from 8 to 1024",
       [](Fixture& f) {
         f.pp.k_tile = 24;
         f.prefill_call();
       }},
      {"PrefillQTile", Err::argument, "q_tile: must be from 1 to 1024, got 0",
       [](Fixture& f) {
         f.pp.q_tile = 0;
         f.prefill_call();
       }},
      {"PrefillScaleNaN", Err::argument, "scale: must be finite",
       [](Fixture& f) {
         f.pp.scale = std::nanf("");
         f.prefill_call();
       }},
      {"PrefillBlkWithoutMask", Err::argument, "blk: a tile-skip map needs the mask",
       [](Fixture& f) { f.prefill_call(false, true); }},
      {"PrefillBlkWrongShape", Err::argument, "blk: shape must be [ceil(Lq/32), ceil(Lk/16)] = [1, 1]",
       [](Fixture& f) {
         f.bv.cols = 2;
         f.prefill_call(true, true);
       }},
      {"PrefillBlkBadEntry", Err::argument, "blk: entries must be 0, 1 or 2",
       [](Fixture& f) {
         f.blk[0] = 3;
         f.prefill_call(true, true);
       }},
      {"PrefillBlkStale", Err::argument, "blk: tile [0, 0] is 0 but this mask gives 1",
       [](Fixture& f) {
         f.blk[0] = 0;  // would skip the only tile, which the all-zero mask does not block
         f.prefill_call(true, true);
       }},
      {"PrefillBlkNull", Err::argument, "blk: data pointer is null",
       [](Fixture& f) {
         f.bv.data = nullptr;
         f.prefill_call(true, true);
       }},
      {"PrefillLseDType", Err::dtype, "lse: dtype must be float32",
       [](Fixture& f) {
         f.lv.dtype = DType::f16;
         f.prefill_call(false, false, true);
       }},
      {"PrefillLseShape", Err::argument, "lse: shape must be [B, H, Lq]",
       [](Fixture& f) {
         f.lv = with_shape(f.lv, 2, 2);
         f.prefill_call(false, false, true);
       }},
      {"PrefillLseReadOnly", Err::argument, "lse: must be writable",
       [](Fixture& f) {
         f.lv.writable = false;
         f.prefill_call(false, false, true);
       }},
      // --- prefill_geometry ------------------------------------------------------
      {"GeometryEmptyKTileLlamacpp_regression", Err::argument, "q_tile: must be from 1 to 1024, got 2000",
       [](Fixture&) { prefill_geometry(PrefillKernel::llamacpp, 512, 2000, std::nullopt); }},
      {"GeometryLlamacppKTile", Err::argument, "k_tile: kernel='llamacpp' works on chunks of 64 keys, got 32",
       [](Fixture&) { prefill_geometry(PrefillKernel::llamacpp, 512, {}, 32); }},
      {"GeometryUnknownKernel_regression", Err::argument, "kernel: unknown kernel code 2",
       [](Fixture&) { prefill_geometry(static_cast<PrefillKernel>(2), 64); }},
      {"GeometryHeadDim", Err::argument, "head_dim: must be >= 1, got 0",
       [](Fixture&) { prefill_geometry(PrefillKernel::candle, 0); }},
      // --- prefill_blk -----------------------------------------------------------
      {"BlkTiles", Err::argument, "geometry: tiles must be >= 1",
       [](Fixture& f) { f.blk_call({0, 16}); }},
      {"BlkOutputShape", Err::argument, "blk: output must be [1, 1], got [1, 2]",
       [](Fixture& f) { f.blk_call({32, 16}, 1, 2); }},
      {"BlkNullOutput", Err::argument, "blk: output pointer is null",
       [](Fixture& f) { flash_attn_prefill_blk(f.mv, PrefillKernel::candle, {32, 16}, nullptr, 1, 1); }},
      {"BlkMaskExtent", Err::argument, "mask: every extent must be > 0",
       [](Fixture& f) {
         f.mv.shape[3] = 0;
         f.blk_call();
       }},
      {"BlkUnknownMaskKind_regression", Err::argument, "mask: unknown mask kind code 3",
       [](Fixture& f) {
         f.mv.kind = static_cast<MaskKind>(3);
         f.blk_call();
       }},
      {"BlkUnknownMaskDType_regression", Err::dtype, "mask: unknown dtype code 7",
       [](Fixture& f) {
         f.mv.dtype = kBadDType;
         f.blk_call();
       }},
      {"BlkUnknownKernel_regression", Err::argument, "kernel: unknown kernel code 4",
       [](Fixture& f) { flash_attn_prefill_blk(f.mv, static_cast<PrefillKernel>(4), {32, 16}, f.blk_out.data(), 1, 1); }},
      {"BlkCeilDivOverflow_regression", Err::argument, "blk: output must be",
       [](Fixture& f) {
         f.mv.shape = {1, 1, kMax, kMax};  // stride 0 everywhere: one element read as any extent
         f.mv.stride = {0, 0, 0, 0};
         f.blk_call({kMax, kMax}, 2, 2);  // ceil(kMax / kMax) = 1: (n + d - 1) / d overflowed
       }},
      {"BlkRowsTimesColsOverflow_regression", Err::argument, "blk: output size",
       [](Fixture& f) {
         f.mv.shape = {1, 1, kBig, kBig};
         f.mv.stride = {0, 0, 0, 0};
         f.blk_call({1, 1}, kBig, kBig);
       }},
      {"BlkMaskStrideOverflow_regression", Err::argument, "mask: strides",
       [](Fixture& f) {
         f.mv.stride[3] = kMin;
         f.blk_call();
       }},
      // --- decode ----------------------------------------------------------------
      {"DecodeQDType", Err::dtype, "q: dtype must be float32, got bfloat16",
       [](Fixture& f) {
         f.q1v.dtype = DType::bf16;
         f.vec_call();
       }},
      {"DecodeMixedCacheDTypes", Err::dtype, "v_cache: dtype must match k_cache",
       [](Fixture& f) { flash_attn_vec(f.q1v, f.cv, with_dtype(f.cv, DType::f16), f.o1v, f.dp); }},
      {"DecodeCacheUnknownDType_regression", Err::dtype, "k_cache: unknown dtype code 7",
       [](Fixture& f) {
         const TensorView bad = with_dtype(f.cv, kBadDType);
         flash_attn_vec(f.q1v, bad, bad, f.o1v, f.dp);
       }},
      {"DecodeQLength", Err::argument, "q: one query per head (L = 1), got 2",
       [](Fixture& f) {
         f.q1v = with_stride(with_shape(f.q1v, 2, 2), 2, 0);
         f.vec_call();
       }},
      {"DecodeHeadDim", Err::argument, "q: head dim D must be a multiple of 32",
       [](Fixture& f) {
         f.q1v = with_shape(f.q1v, 3, 48);
         f.vec_call();
       }},
      {"DecodeGqa", Err::argument, "must be divisible by the number of K/V heads H_kv (3)",
       [](Fixture& f) {
         f.cv = with_shape(f.cv, 1, 3);
         f.vec_call();
       }},
      {"DecodeKvSeqLenOverCapacity", Err::argument, "kv_seq_len: must be <= the capacity of k_cache and v_cache (10), got 11",
       [](Fixture& f) {
         f.dp.kv_seq_len = 11;
         f.vec_call();
       }},
      // quantized caches
      {"DecodeQuantUnimplementedFormat", Err::argument, "k_cache: quantized format 'affine4' is not implemented",
       [](Fixture& f) {
         f.qcv.format = QuantFormat::affine4;
         f.quant_call();
       }},
      {"DecodeQuantUnknownFormat_regression", Err::argument, "k_cache: quantized format 'unknown",
       [](Fixture& f) {
         f.qcv.format = QuantFormat(9);
         f.quant_call();
       }},
      {"DecodeQuantHeadDim48", Err::argument,
       "k_cache: a quantized cache's head dim D must be a positive multiple of 32 (its block size), got 48",
       [](Fixture& f) {
         f.qcv.shape[3] = 48;
         f.quant_call();
       }},
      {"DecodeQuantHeadDimMismatch", Err::argument, "k_cache: head dim D (q's) must be 64, got 32",
       [](Fixture& f) {
         f.qcv.shape[3] = 32;
         f.quant_call();
       }},
      {"DecodeQuantCapacityMismatch", Err::argument, "v_cache: shape must equal k_cache's [1, 2, 10, 64], got [1, 2, 9, 64]",
       [](Fixture& f) { flash_attn_vec(f.q1v, f.qcv, with_shape(f.cv, 2, 9), f.o1v, f.dp); }},
      {"DecodeQuantHeadsMismatch", Err::argument, "v_cache: shape must equal k_cache's [1, 2, 10, 64], got [1, 1, 10, 64]",
       [](Fixture& f) {
         QuantView v = f.qcv;
         v.shape[1] = 1;
         flash_attn_vec(f.q1v, f.qcv, v, f.o1v, f.dp);
       }},
      {"DecodeQuantOverCapacity", Err::argument, "kv_seq_len: must be <= the capacity of k_cache and v_cache (10), got 11",
       [](Fixture& f) {
         f.dp.kv_seq_len = 11;
         f.quant_call();
       }},
      {"DecodeQuantNullData", Err::argument, "v_cache: data pointer is null",
       [](Fixture& f) {
         QuantView v = f.qcv;
         v.data = nullptr;
         flash_attn_vec_partials(f.q1v, f.qcv, v, f.opv, f.spv, f.mpv, f.dp);
       }},
      {"DecodeQuantStrideOverflow", Err::argument, "k_cache: strides",
       [](Fixture& f) {
         f.qcv.stride[2] = std::numeric_limits<std::int64_t>::max() / 4;
         f.quant_call();
       }},
      {"DecodeKvSeqLenZero", Err::argument, "kv_seq_len: must be >= 1, got 0",
       [](Fixture& f) {
         f.dp.kv_seq_len = 0;
         f.vec_call();
       }},
      {"DecodeSinksLength", Err::argument, "sinks: expected one per query head (length H = 4), got length 2",
       [](Fixture& f) {
         f.dp.sinks = {0.0f, 1.0f};
         f.vec_call();
       }},
      {"DecodeSinksNaN", Err::argument, "sinks: must be finite or -inf (no sink), got nan for head 2",
       [](Fixture& f) {
         f.dp.sinks = {0.0f, 1.0f, std::numeric_limits<float>::quiet_NaN(), 0.0f};
         f.partials_call();
       }},
      {"DecodeSinksPlusInf", Err::argument, "sinks: must be finite or -inf (no sink), got inf for head 0",
       [](Fixture& f) {
         f.dp.sinks = {std::numeric_limits<float>::infinity(), 1.0f, 0.0f, 0.0f};
         f.vec_call();
       }},
      {"DecodeRingStartNegative", Err::argument, "ring_start: must be from 0 to capacity - 1 (9), got -1",
       [](Fixture& f) {
         f.dp.ring_start = -1;
         f.vec_call();
       }},
      {"DecodeRingStartCapacity", Err::argument, "ring_start: must be from 0 to capacity - 1 (9), got 10",
       [](Fixture& f) {
         f.dp.ring_start = 10;
         f.partials_call();
       }},
      {"DecodeNwgZero", Err::argument, "nwg: must be from 1 to 64, got 0",
       [](Fixture& f) {
         f.dp.nwg = 0;
         f.vec_call();
       }},
      {"DecodeNwg65", Err::argument, "nwg: must be from 1 to 64, got 65",
       [](Fixture& f) {
         f.dp.nwg = 65;
         f.vec_call();
       }},
      {"DecodeWindowNegative", Err::argument, "window: must be >= 0, got -1",
       [](Fixture& f) {
         f.dp.mask = DecodeMask::sliding_window;
         f.dp.window = -1;
         f.vec_call();
       }},
      {"DecodeUnknownMask_regression", Err::argument, "mask: unknown decode mask code 3",
       [](Fixture& f) {
         f.dp.mask = static_cast<DecodeMask>(3);
         f.vec_call();
       }},
      {"DecodeSoftcapNaN", Err::argument, "softcap: must be finite and >= 0",
       [](Fixture& f) {
         f.dp.softcap = std::nanf("");
         f.vec_call();
       }},
      {"DecodeSoftcapNegative", Err::argument, "softcap: must be finite and >= 0",
       [](Fixture& f) {
         f.dp.softcap = -1.0f;
         f.vec_call();
       }},
      {"DecodeScaleInf", Err::argument, "scale: must be finite",
       [](Fixture& f) {
         f.dp.scale = -std::numeric_limits<float>::infinity();
         f.vec_call();
       }},
      {"DecodeOutShape", Err::argument, "out: shape must equal q's",
       [](Fixture& f) {
         f.o1v = with_shape(f.o1v, 1, 2);
         f.vec_call();
       }},
      {"DecodeOutDType", Err::dtype, "out: dtype must be float32",
       [](Fixture& f) {
         f.o1v.dtype = DType::f16;
         f.vec_call();
       }},
      // Once this reached a workspace past 2^63 floats; an output that large must now
      // alias itself (it cannot be addressed otherwise), which is rejected first.
      {"DecodeWorkspaceOverflow_regression", Err::argument, "out: its elements overlap",
       [](Fixture& f) {  // q broadcast (stride 0) over 2^56 rows
         auto wide = [](TensorView t, std::int64_t b, std::int64_t h) {
           t = with_shape(with_shape(with_shape(t, 0, b), 1, h), 3, 32);
           return with_stride(with_stride(t, 0, 0), 1, 0);
         };
         f.dp.nwg = 64;
         const TensorView cache = wide(f.cv, std::int64_t(1) << 36, 1);
         flash_attn_vec(wide(f.q1v, std::int64_t(1) << 36, 1 << 20), cache, cache,
                        wide(f.o1v, std::int64_t(1) << 36, 1 << 20), f.dp);
       }},
      {"PartialsShape", Err::argument, "o: shape must be [B, H, nwg, D] = [1, 4, 8, 64]",
       [](Fixture& f) {
         f.dp.nwg = 8;
         f.partials_call();
       }},
      {"PartialsSM", Err::argument, "s and m must be [..., H, nwg]",
       [](Fixture& f) {
         f.spv = with_shape(f.spv, 2, 2);
         f.partials_call();
       }},
      {"PartialsOverlap", Err::argument, "partials: its elements overlap",
       [](Fixture& f) {
         f.spv.stride[2] = 0;
         f.partials_call();
       }},
      {"PartialsReadOnly", Err::argument, "partials: must be writable",
       [](Fixture& f) {
         f.mpv.writable = false;
         f.partials_call();
       }},
      {"PartialsDType", Err::dtype, "flash_attn_vec_partials: partials must be float32",
       [](Fixture& f) {
         f.opv.dtype = DType::bf16;
         f.partials_call();
       }},
      {"ReduceNwg", Err::argument, "o: nwg (the group axis) must be from 1 to 64, got 65",
       [](Fixture& f) {
         f.opv = with_stride(with_shape(f.opv, 2, 65), 2, 0);
         f.spv = with_stride(with_shape(f.spv, 2, 65), 2, 0);
         f.mpv = with_stride(with_shape(f.mpv, 2, 65), 2, 0);
         f.reduce_call();
       }},
      {"ReduceOutShape", Err::argument, "out: shape must be [B, H, 1, D] matching o",
       [](Fixture& f) {
         f.o1v = with_shape(f.o1v, 3, 32);
         f.reduce_call();
       }},
      {"ReduceOutStrideZero", Err::argument, "out: its elements overlap",
       [](Fixture& f) {
         f.o1v.stride[1] = 0;
         f.reduce_call();
       }},
      {"ReduceOutReadOnly", Err::argument, "out: must be writable",
       [](Fixture& f) {
         f.o1v.writable = false;
         f.reduce_call();
       }},
      // --- merge_attention ---------------------------------------------------------
      {"MergeNoInputs", Err::argument, "outputs: need at least one attention result",
       [](Fixture& f) { merge_attention({}, {}, 1, 4, f.out.data(), nullptr); }},
      {"MergeLseCount", Err::argument, "lses: need one per output (1), got 2",
       [](Fixture& f) { merge_attention({f.q.data()}, {f.k.data(), f.v.data()}, 1, 4, f.out.data(), nullptr); }},
      {"MergeRowsZero", Err::argument, "outputs: rows and head dim must be >= 1, got rows = 0",
       [](Fixture& f) { merge_attention({f.q.data()}, {f.k.data()}, 0, 4, f.out.data(), nullptr); }},
      {"MergeHeadDimNegative", Err::argument, "head_dim = -4",
       [](Fixture& f) { merge_attention({f.q.data()}, {f.k.data()}, 1, -4, f.out.data(), nullptr); }},
      {"MergeNullInput", Err::argument, "outputs/lses: null pointer at index 1",
       [](Fixture& f) {
         merge_attention({f.q.data(), nullptr}, {f.k.data(), f.v.data()}, 1, 4, f.out.data(), nullptr);
       }},
      {"MergeNullOut", Err::argument, "out: null pointer",
       [](Fixture& f) { merge_attention({f.q.data()}, {f.k.data()}, 1, 4, nullptr, nullptr); }},
      {"MergeSizeOverflow_regression", Err::argument, "outputs: rows * head_dim",
       [](Fixture& f) { merge_attention({f.q.data()}, {f.k.data()}, kBig, kBig, f.out.data(), nullptr); }},
      {"MergeSinksNaN", Err::argument, "sinks: must be finite or -inf (no sink), got nan for head 0",
       [](Fixture& f) {
         const float bad[1] = {std::numeric_limits<float>::quiet_NaN()};
         merge_attention({f.q.data()}, {f.k.data()}, 1, 4, f.out.data(), nullptr, MergeSinks{bad, 1, 1});
       }},
      {"MergeSinksDoNotTile", Err::argument, "sinks: 2 heads of 1 rows each do not tile the 3 rows",
       [](Fixture& f) {
         const float sinks[2] = {0.0f, 1.0f};
         merge_attention({f.q.data()}, {f.k.data()}, 3, 4, f.out.data(), nullptr, MergeSinks{sinks, 2, 1});
       }},
      {"MergeSinksNoHeads", Err::argument, "sinks: 0 heads",
       [](Fixture& f) {
         const float sinks[1] = {0.0f};
         merge_attention({f.q.data()}, {f.k.data()}, 1, 4, f.out.data(), nullptr, MergeSinks{sinks, 0, 1});
       }},
      // --- threads and instruction sets ---------------------------------------------
      {"SetNumThreadsZero", Err::argument, "set_num_threads: n must be >= 1, got 0",
       [](Fixture&) { set_num_threads(0); }},
      {"SetNumThreadsHuge", Err::argument, "set_num_threads: n must be <= 1024",
       [](Fixture&) { set_num_threads(1 << 20); }},
      {"SetIsaUnknown_regression", Err::argument, "isa: unknown instruction set code -1",
       [](Fixture&) { simd::set_active_isa(static_cast<simd::Isa>(-1)); }},
      {"IsaFromName", Err::argument, "isa: must be 'scalar', 'avx2', ",
       [](Fixture&) { simd::isa_from_name("sse"); }},
  };
  return table;
}

class BadInput : public ::testing::TestWithParam<std::size_t> {};

TEST_P(BadInput, ThrowsNamingTheArgumentAndWritesNothing) {
  const Case& c = cases()[GetParam()];
  Fixture f;
  bool thrown = false;
  try {
    c.call(f);
  } catch (const InvalidDType& e) {
    thrown = true;
    EXPECT_EQ(c.err, Err::dtype) << "InvalidDType where InvalidArgument was expected: " << e.what();
    EXPECT_NE(std::string(e.what()).find(c.fragment), std::string::npos) << e.what();
  } catch (const InvalidArgument& e) {
    thrown = true;
    EXPECT_EQ(c.err, Err::argument) << "InvalidArgument where InvalidDType was expected: " << e.what();
    EXPECT_NE(std::string(e.what()).find(c.fragment), std::string::npos) << e.what();
  }
  EXPECT_TRUE(thrown) << "no exception; expected one mentioning '" << c.fragment << "'";
  EXPECT_TRUE(f.outputs_untouched());
}

INSTANTIATE_TEST_SUITE_P(Matrix, BadInput, ::testing::Range<std::size_t>(0, cases().size()),
                         [](const ::testing::TestParamInfo<std::size_t>& info) {
                           return std::string(cases()[info.param].name);
                         });

// The good fixture passes: every row above fails for the one thing it breaks.
TEST(BadInput, TheFixtureItselfIsValid) {
  Fixture f;
  EXPECT_NO_THROW(f.sdpa_call());
  EXPECT_NO_THROW(f.prefill_call(true, true, true));
  EXPECT_NO_THROW(f.blk_call());
  EXPECT_NO_THROW(f.vec_call());
  EXPECT_NO_THROW(f.quant_call());
  EXPECT_NO_THROW(f.partials_call());
  EXPECT_NO_THROW(f.reduce_call());
  EXPECT_NO_THROW(prefill_geometry(PrefillKernel::llamacpp, 512));
  EXPECT_NO_THROW(merge_attention({f.q.data()}, {f.k.data()}, 1, 4, f.out.data(), nullptr));
}

}  // namespace
