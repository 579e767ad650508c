// libFuzzer target for fattn's C++ argument validation and kernels at small
// sizes. Input bytes decode into an operation, shapes, strides, dtypes, mask
// kinds, flags and parameters; every view is placed over a buffer of exactly
// the bytes it can reach (so ASan sees any read or write outside it), and
// the call either succeeds or throws fattn::InvalidArgument (InvalidDType
// included). Anything else — a crash, an ASan or UBSan report, another
// exception, a hang — is a finding.
//
// A view whose elements cannot all be placed in a small buffer, or a call
// that would do too much work, is still passed to the validation, but with a
// read-only output: then the call must throw, and never reaches a kernel.
//
// Operations: the first byte modulo 8 (6 with the first byte >= 128: the
// quantized caches; 7 below 128: the packed varlen prefill). Build and run: make fuzz (FUZZ_SECONDS=60).
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "fattn/fattn.hpp"
#include "runtime/isa.hpp"

using namespace fattn;

namespace {

constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max();
constexpr std::int64_t kMin = std::numeric_limits<std::int64_t>::min();
constexpr std::int64_t kMaxBufferBytes = 1 << 18;  // per operand
constexpr std::int64_t kMaxWork = 1 << 18;          // multiply-adds a call may do

[[noreturn]] void finding(const char* what) {
  std::fprintf(stderr, "fuzz_args finding: %s\n", what);
  std::abort();
}

// Reads the input front to back; past its end every read is 0.
struct Reader {
  const std::uint8_t* p;
  std::size_t n;
  std::uint8_t byte() {
    if (n == 0) return 0;
    --n;
    return *p++;
  }
  bool flag() { return byte() & 1; }
  std::uint64_t u64() {
    std::uint64_t x = 0;
    for (int i = 0; i < 8; ++i) x = (x << 8) | byte();
    return x;
  }
  // Mostly small values, sometimes ones at the edges of int64.
  std::int64_t wild() {
    static const std::int64_t table[] = {-1, -7, 0, std::int64_t(1) << 31, std::int64_t(1) << 32,
                                         std::int64_t(1) << 40, std::int64_t(1) << 62, kMax, kMin, kMax / 4 + 1};
    const std::uint8_t b = byte();
    if (b < 240) return b % 8;
    if (b < 250) return table[b - 240];
    return std::int64_t(u64());
  }
  std::int64_t extent() {
    static const std::int64_t table[] = {1, 2, 3, 4, 5, 1, 2, 7, 8, 16, 17, 32, 33, 64, 96, 512};
    const std::uint8_t b = byte();
    if (b < 224) return table[b % 16];
    if (b < 232) return 0;
    return wild();
  }
  DType dtype(DType usual) {
    const std::uint8_t b = byte();
    if (b < 200) return usual;
    if (b < 250) return DType(b % 3);
    return DType(b);  // unknown codes
  }
  float scalar() {
    static const float table[] = {0.125f, 1.0f, -1.0f, 0.0f, NAN, INFINITY, -INFINITY, 1e30f, 1e-30f, 30.0f};
    return table[byte() % 10];
  }
  std::optional<float> scale() {
    const std::uint8_t b = byte();
    if (b < 128) return std::nullopt;
    return scalar();
  }
};

// A pseudo-random fill: mostly small values, now and then raw bit patterns
// (NaN, inf, subnormals).
struct Filler {
  std::uint64_t s;
  std::uint32_t next() {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return std::uint32_t(s);
  }
  void fill(std::vector<std::uint8_t>& buf, DType dt) {
    const std::int64_t size = is_valid_dtype(dt) ? dtype_size(dt) : 4;
    for (std::size_t i = 0; i + std::size_t(size) <= buf.size(); i += std::size_t(size)) {
      const std::uint32_t r = next();
      float x = float(std::int32_t(r >> 8) % 64) / 16.0f;
      if ((r & 63) == 0) std::memcpy(&x, &r, 4);
      if (size == 4) {
        std::memcpy(&buf[i], &x, 4);
      } else {
        const std::uint16_t h = dt == DType::bf16 ? f32_to_bf16(x) : f32_to_f16(x);
        std::memcpy(&buf[i], &h, 2);
      }
    }
  }
};

// Memory for one operand: exactly the bytes its view can reach.
struct Operand {
  std::vector<std::uint8_t> bytes;
  bool fits = false;  // false: its elements could not be placed, kernels must not run
};

std::int64_t element_size(DType dt) { return is_valid_dtype(dt) ? dtype_size(dt) : 4; }

// Points `data` into a fresh buffer holding every element that shape and
// stride reach; fits = false when they reach too much (or the view is
// empty, which validation must reject before reading).
void *place(Operand& op, const std::array<std::int64_t, 4>& shape, const std::array<std::int64_t, 4>& stride,
            std::int64_t esize, Filler& fill, DType dt) {
  __int128 lo = 0, hi = 0;
  bool empty = false;
  constexpr std::int64_t kHuge = std::int64_t(1) << 40;
  for (int a = 0; a < 4; ++a) {
    if (shape[std::size_t(a)] <= 0) empty = true;
    const std::int64_t st = stride[std::size_t(a)], n = shape[std::size_t(a)];
    if (st != 0 && n > 1 && (st > kHuge || st < -kHuge || n > kHuge)) empty = true;  // too far to place
    if (empty) break;
    const __int128 span = __int128(stride[std::size_t(a)]) * (__int128(shape[std::size_t(a)]) - 1);
    (span < 0 ? lo : hi) += span;
  }
  if (empty || (hi - lo + 1) * esize > kMaxBufferBytes) {
    op.bytes.assign(64, 0);  // a valid pointer; nothing may be read through it
    op.fits = false;
    return op.bytes.data();
  }
  op.bytes.assign(std::size_t((hi - lo + 1) * esize), 0);
  fill.fill(op.bytes, dt);
  op.fits = true;
  return op.bytes.data() + std::size_t(-lo * esize);
}

// Strides for a [B, H, L, D] view: dense, seq-major, small custom ones
// (0 and negative included), or wild ones.
std::array<std::int64_t, 4> strides_for(Reader& r, const std::array<std::int64_t, 4>& s) {
  const std::uint8_t mode = r.byte();
  auto mul = [](std::int64_t a, std::int64_t b) {
    std::int64_t c = 0;
    return __builtin_mul_overflow(a, b, &c) ? kMax : c;
  };
  if (mode < 150) return {mul(mul(s[1], s[2]), s[3]), mul(s[2], s[3]), s[3], 1};
  if (mode < 200) return {mul(mul(s[1], s[2]), s[3]), s[3], mul(s[1], s[3]), 1};  // [B, L, H, D] memory
  std::array<std::int64_t, 4> st{};
  for (int a = 0; a < 3; ++a) st[std::size_t(a)] = mode < 245 ? std::int64_t(std::int8_t(r.byte())) : r.wild();
  const std::uint8_t d = r.byte();
  st[3] = d < 240 ? 1 : d < 248 ? 0 : d < 252 ? -1 : 2;
  return st;
}

struct View {
  Operand mem;
  TensorView t;
  bool fits() const { return mem.fits; }
};

void make_view(View& v, Reader& r, Filler& fill, std::array<std::int64_t, 4> shape, DType dt, bool writable) {
  if (r.byte() >= 240) shape[r.byte() % 4] = r.extent();  // now and then one extent disagrees
  v.t.shape = shape;
  v.t.stride = strides_for(r, shape);
  v.t.dtype = r.dtype(dt);
  v.t.writable = writable && r.byte() < 250;
  v.t.data = place(v.mem, v.t.shape, v.t.stride, element_size(v.t.dtype), fill, v.t.dtype);
  if (r.byte() >= 253) v.t.data = nullptr;
}

// A quantized cache [B, H_kv, L, D]: q8_0 or q4_0 mostly, now and then a
// format the decode does not implement or an unknown code; byte strides
// dense, with padding between rows, or wild. Its buffer holds exactly the
// bytes its rows reach, filled with raw bytes (scales of any f16 pattern).
struct QView {
  Operand mem;
  QuantView t;
  bool fits() const { return mem.fits; }
};

void make_quant_view(QView& v, Reader& r, Filler& fill, std::array<std::int64_t, 4> shape) {
  if (r.byte() >= 240) shape[r.byte() % 4] = r.extent();
  const std::uint8_t f = r.byte();
  v.t.format = f < 120 ? QuantFormat::q8_0 : f < 240 ? QuantFormat::q4_0 : f < 250 ? QuantFormat(2 + f % 2) : QuantFormat(f);
  v.t.shape = shape;
  const bool known = (v.t.format == QuantFormat::q8_0 || v.t.format == QuantFormat::q4_0) && shape[3] > 0 &&
                     shape[3] % 32 == 0 && shape[3] <= 4096;
  const std::int64_t row = known ? shape[3] / 32 * (v.t.format == QuantFormat::q8_0 ? 34 : 18) : 1;
  auto mul = [](std::int64_t a, std::int64_t b) {
    std::int64_t c = 0;
    return __builtin_mul_overflow(a, b, &c) ? kMax : c;
  };
  const std::uint8_t mode = r.byte();
  const std::int64_t s2 = row + (mode < 200 ? 0 : r.byte() % 16);
  v.t.stride = {mul(mul(shape[1], shape[2]), s2), mul(shape[2], s2), s2};
  if (mode >= 240)
    for (int a = 0; a < 3; ++a) v.t.stride[std::size_t(a)] = r.byte() < 200 ? std::int64_t(std::int8_t(r.byte())) : r.wild();
  __int128 lo = 0, hi = 0;
  bool placeable = known;
  constexpr std::int64_t kHuge = std::int64_t(1) << 40;
  for (int a = 0; a < 3 && placeable; ++a) {
    const std::int64_t st = v.t.stride[std::size_t(a)], n = shape[std::size_t(a)];
    if (n <= 0 || (st != 0 && n > 1 && (st > kHuge || st < -kHuge || n > kHuge))) placeable = false;
    else (st < 0 ? lo : hi) += __int128(st) * (n - 1);
  }
  if (!placeable || hi - lo + row > kMaxBufferBytes) {
    v.mem.bytes.assign(64, 0);  // a valid pointer; nothing may be read through it
    v.mem.fits = false;
    v.t.data = v.mem.bytes.data();
  } else {
    v.mem.bytes.resize(std::size_t(hi - lo + row));
    for (auto& byte : v.mem.bytes) byte = std::uint8_t(fill.next());
    v.mem.fits = true;
    v.t.data = v.mem.bytes.data() + std::size_t(-lo);
  }
  if (r.byte() >= 253) v.t.data = nullptr;
}

// A mask over target [B, H, Lq, Lk]: rank-2 broadcast, full, or odd.
struct Mask {
  Operand mem;
  MaskView m;
  bool fits() const { return mem.fits; }
};

void make_mask(Mask& mk, Reader& r, Filler& fill, const std::array<std::int64_t, 4>& target) {
  const std::uint8_t kind = r.byte();
  mk.m.kind = kind < 120 ? MaskKind::additive : kind < 250 ? MaskKind::boolean : MaskKind(kind);
  mk.m.dtype = r.dtype(DType::f32);
  std::array<std::int64_t, 4> shape = target;
  std::array<std::int64_t, 4> stride{};
  const std::uint8_t mode = r.byte();
  if (mode < 128) {  // [Lq, Lk] broadcast over B and H
    stride = {0, 0, target[3], 1};
  } else if (mode < 220) {
    stride = strides_for(r, shape);
  } else {  // arbitrary broadcast extents and strides
    for (int a = 0; a < 4; ++a) {
      if (r.flag()) {
        stride[std::size_t(a)] = 0;
        shape[std::size_t(a)] = r.extent();
      } else {
        stride[std::size_t(a)] = r.byte() < 240 ? std::int64_t(std::int8_t(r.byte())) : r.wild();
      }
    }
  }
  mk.m.shape = shape;
  mk.m.stride = stride;
  const bool boolean = mk.m.kind == MaskKind::boolean;
  // Elements the kernels may read: the target's extents on non-broadcast axes.
  std::array<std::int64_t, 4> reach = shape;
  for (int a = 0; a < 4; ++a)
    if (stride[std::size_t(a)] == 0) reach[std::size_t(a)] = 1;
  const DType dt = boolean ? DType::f32 : mk.m.dtype;
  const std::int64_t esize = boolean ? 1 : element_size(mk.m.dtype);
  mk.m.data = place(mk.mem, reach, stride, esize, fill, dt);
  if (boolean)
    for (auto& b : mk.mem.bytes) b = std::uint8_t(fill.next() % 3 == 0 ? 0 : 1);
  if (r.byte() >= 253) mk.m.data = nullptr;
}

// n + delta, saturated at int64's ends (an extent may be any int64: r.wild()).
std::int64_t step(std::int64_t n, std::int64_t delta) {
  std::int64_t out = 0;
  return __builtin_add_overflow(n, delta, &out) ? (delta < 0 ? kMin : kMax) : out;
}

bool saturating_work(std::initializer_list<std::int64_t> extents) {  // true when the product exceeds kMaxWork
  __int128 w = 1;
  for (std::int64_t e : extents) {
    if (e <= 0) return false;
    w *= e;
    if (w > kMaxWork) return true;
  }
  return false;
}

// Runs `call`; fattn's own exception is an accepted answer. When `must_throw`
// (a read-only output was passed because the call could not safely run), a
// normal return is a finding.
template <class F>
void expect(bool must_throw, F&& call) {
  try {
    call();
  } catch (const InvalidArgument&) {
    return;
  }
  if (must_throw) finding("a call with a read-only output returned normally");
}

// --- the operations -----------------------------------------------------------------

struct Dims {
  std::int64_t B, H, Hkv, Lq, Lk, D;
};

Dims read_dims(Reader& r) {
  Dims d{r.extent(), r.extent(), 1, r.extent(), r.extent(), r.extent()};
  const std::uint8_t g = r.byte();
  d.Hkv = g < 200 ? (d.H % 2 == 0 && g % 2 ? d.H / 2 : d.H) : r.extent();
  return d;
}

void fuzz_sdpa_or_prefill(Reader& r, Filler& fill, bool prefill) {
  const Dims d = read_dims(r);
  const DType dt = DType(r.byte() % 3);
  View q, k, v, out, lse;
  make_view(q, r, fill, {d.B, d.H, d.Lq, d.D}, dt, false);
  make_view(k, r, fill, {d.B, d.Hkv, d.Lk, d.D}, dt, false);
  make_view(v, r, fill, {d.B, d.Hkv, d.Lk, d.D}, dt, false);
  make_view(out, r, fill, {d.B, d.H, d.Lq, d.D}, dt, true);
  // Work from the views' own extents (one may disagree with the dims).
  const auto& qs = q.t.shape;
  bool safe = q.fits() && k.fits() && v.fits() && out.fits() &&
              !saturating_work({qs[0], qs[1], qs[2], k.t.shape[2], qs[3]});
  if (!prefill) {
    SdpaParams p;
    p.causal = r.flag();
    p.scale = r.scale();
    const std::uint8_t kvl = r.byte();
    if (kvl >= 100)  // below: unset, all of k's positions
      p.kv_seq_len = kvl < 150 ? d.Lk : kvl < 180 ? step(d.Lk, -1) : kvl < 200 ? step(d.Lk, 1) : r.wild();
    if (!safe) out.t.writable = false;
    expect(!safe, [&] { sdpa(q.t, k.t, v.t, out.t, p); });
    return;
  }
  PrefillParams p;
  p.causal = r.flag();
  p.scale = r.scale();
  const std::uint8_t kern = r.byte();
  p.kernel = kern < 160 ? PrefillKernel::candle : kern < 250 ? PrefillKernel::llamacpp : PrefillKernel(kern);
  const std::uint8_t nsg = r.byte();
  p.nsg = nsg < 120 ? 8 : nsg < 240 ? 4 : int(std::int8_t(r.byte()));
  if (r.byte() >= 200) p.q_tile = r.byte() < 200 ? std::int64_t(1 + r.byte() % 64) : r.wild();
  if (r.byte() >= 200) p.k_tile = r.byte() < 200 ? std::int64_t(8) << (r.byte() % 8) : r.wild();
  const std::uint8_t extras = r.byte();
  Mask mask;
  const bool with_mask = extras & 1, with_blk = extras & 2, with_lse = extras & 4;
  if (with_mask) {
    make_mask(mask, r, fill, {d.B, d.H, d.Lq, d.Lk});
    safe = safe && mask.fits();
  }
  std::vector<std::uint8_t> blk_bytes;
  BlkView blk;
  if (with_blk) {
    // The right shape for the kernel's geometry (when it has one), built by
    // flash_attn_prefill_blk or from raw bytes; sometimes a wrong shape.
    std::int64_t rows = 1 + r.byte() % 4, cols = 1 + r.byte() % 4;
    std::optional<PrefillGeometry> g;
    try {
      g = prefill_geometry(p.kernel, d.D, p.q_tile, p.k_tile);
    } catch (const InvalidArgument&) {
    }
    if (g && d.Lq >= 1 && d.Lk >= 1 && r.byte() < 220) {
      rows = d.Lq / g->q_tile + (d.Lq % g->q_tile != 0);
      cols = d.Lk / g->k_tile + (d.Lk % g->k_tile != 0);
    }
    if (saturating_work({rows, cols}) || rows * cols > kMaxBufferBytes) {
      rows = cols = 1;
      safe = false;
    }
    blk_bytes.resize(std::size_t(rows * cols));
    bool built = false;
    if (g && with_mask && mask.fits() && r.flag() && !saturating_work({d.B, d.H, d.Lq, d.Lk})) {
      try {
        flash_attn_prefill_blk(mask.m, p.kernel, *g, blk_bytes.data(), rows, cols);
        built = true;
      } catch (const InvalidArgument&) {
      }
    }
    if (!built)
      for (auto& b : blk_bytes) b = std::uint8_t(r.byte() % 4);
    blk = BlkView{blk_bytes.data(), rows, cols};
  }
  if (with_lse) {
    make_view(lse, r, fill, {d.B, d.H, d.Lq, 1}, DType::f32, true);
    safe = safe && lse.fits();
  }
  if (!safe) out.t.writable = false;
  expect(!safe, [&] {
    flash_attn_prefill(q.t, k.t, v.t, out.t, with_mask ? &mask.m : nullptr, with_blk ? &blk : nullptr,
                       with_lse ? &lse.t : nullptr, p);
  });
}

// The packed varlen prefill: B + 1 offsets per side, a valid mix of lengths
// (empty sequences included) now and then corrupted (not from 0, a step
// back, a wrong last entry, a wild value, a B that differs, a null pointer),
// over packed views [1, H, total, D] placed like any other.
void fuzz_varlen(Reader& r, Filler& fill) {
  const std::int64_t sequences = r.byte() % 6;
  std::vector<std::int64_t> cu_q{0}, cu_k{0};
  for (std::int64_t b = 0; b < sequences; ++b) {
    cu_q.push_back(cu_q.back() + r.byte() % 40);
    cu_k.push_back(cu_k.back() + r.byte() % 40);
  }
  const std::int64_t total_q = cu_q.back(), total_k = cu_k.back();
  const std::uint8_t corrupt = r.byte();
  if (corrupt >= 200) {
    std::vector<std::int64_t>& cu = corrupt & 1 ? cu_q : cu_k;
    std::int64_t& entry = cu[r.byte() % cu.size()];
    entry = r.byte() < 128 ? step(entry, std::int8_t(r.byte())) : r.wild();
  }
  if (corrupt >= 250) cu_k.push_back(cu_k.back());
  Dims d = read_dims(r);
  if (r.byte() < 200) d.D = r.byte() < 200 ? 64 : 512;
  const DType dt = DType(r.byte() % 3);
  View q, k, v, out, lse;
  make_view(q, r, fill, {1, d.H, total_q, d.D}, dt, false);
  make_view(k, r, fill, {1, d.Hkv, total_k, d.D}, dt, false);
  make_view(v, r, fill, {1, d.Hkv, total_k, d.D}, dt, false);
  make_view(out, r, fill, {1, d.H, total_q, d.D}, dt, true);
  VarlenPrefillParams p;
  p.causal = r.flag();
  const std::uint8_t align = r.byte();
  if (align >= 128) p.causal_align = align < 250 ? CausalAlign(align % 2) : CausalAlign(align);
  p.scale = r.scale();
  const std::uint8_t kern = r.byte();
  p.kernel = kern < 160 ? PrefillKernel::candle : kern < 250 ? PrefillKernel::llamacpp : PrefillKernel(kern);
  if (r.byte() >= 200) p.window = r.byte() < 240 ? r.byte() % 80 : r.wild();
  if (r.byte() >= 200) p.softcap = r.scalar();
  if (r.byte() >= 200) p.q_offset = r.wild();
  if (r.byte() >= 200) p.sinks.assign(std::size_t(r.byte() % 9), r.scalar());
  const auto& qs = q.t.shape;
  bool safe = q.fits() && k.fits() && v.fits() && out.fits() &&
              !saturating_work({qs[0], qs[1], qs[2], k.t.shape[2], qs[3]});
  const bool with_lse = r.flag();
  if (with_lse) {
    make_view(lse, r, fill, {1, d.H, total_q, 1}, DType::f32, true);
    safe = safe && lse.fits();
  }
  if (!safe) out.t.writable = false;
  const std::uint8_t null_offsets = r.byte();
  expect(!safe, [&] {
    flash_attn_varlen(q.t, k.t, v.t, out.t, null_offsets >= 250 ? nullptr : cu_q.data(), std::int64_t(cu_q.size()),
                      cu_k.data(), std::int64_t(cu_k.size()), with_lse ? &lse.t : nullptr, p);
  });
}

void fuzz_blk(Reader& r, Filler& fill) {
  const std::array<std::int64_t, 4> target = {r.extent(), r.extent(), r.extent(), r.extent()};
  Mask mask;
  make_mask(mask, r, fill, target);
  const std::uint8_t kern = r.byte();
  const PrefillKernel kernel = kern < 160 ? PrefillKernel::candle : kern < 250 ? PrefillKernel::llamacpp : PrefillKernel(kern);
  PrefillGeometry g{r.byte() < 230 ? 1 + r.byte() % 40 : r.wild(), r.byte() < 230 ? 1 + r.byte() % 40 : r.wild()};
  const std::array<std::int64_t, 4>& s = mask.m.shape;
  __int128 rows = 1 + r.byte() % 4, cols = 1 + r.byte() % 4;
  if (g.q_tile >= 1 && g.k_tile >= 1 && s[2] >= 1 && s[3] >= 1 && r.byte() < 220) {
    rows = (__int128(s[2]) + g.q_tile - 1) / g.q_tile;
    cols = (__int128(s[3]) + g.k_tile - 1) / g.k_tile;
  }
  // Work: one visit per mask element on non-broadcast axes, per tile cell.
  const bool safe = mask.fits() && rows * cols <= kMaxBufferBytes &&
                    !saturating_work({mask.m.stride[0] ? s[0] : 1, mask.m.stride[1] ? s[1] : 1, s[2], s[3]});
  std::vector<std::uint8_t> out(safe ? std::size_t(rows * cols) : 1);
  if (!safe) {  // cannot run: the output shape is made wrong on purpose, so the call must throw
    // Wrong against the plan's own row count, not against `rows`: a drawn
    // `rows` may sit one below the true count, and then `rows + 1` is right.
    const __int128 true_rows = g.q_tile >= 1 && s[2] >= 1 ? (__int128(s[2]) + g.q_tile - 1) / g.q_tile : rows;
    const std::int64_t bad_rows = true_rows > kMax - 1 ? 0 : std::int64_t(true_rows) + 1;
    expect(true, [&] { flash_attn_prefill_blk(mask.m, kernel, g, out.data(), bad_rows, std::int64_t(cols > kMax ? 1 : cols)); });
    return;
  }
  expect(false, [&] { flash_attn_prefill_blk(mask.m, kernel, g, out.data(), std::int64_t(rows), std::int64_t(cols)); });
  for (auto b : out)
    if (b > 2) finding("prefill_blk wrote an entry other than 0, 1, 2");
}

void fuzz_decode(Reader& r, Filler& fill, bool split) {
  Dims d = read_dims(r);
  static const std::int64_t dims[] = {32, 64, 96, 128, 256, 512, 48, 0};
  if (r.byte() < 230) d.D = dims[r.byte() % 8];
  const DType dt = DType(r.byte() % 3);
  DecodeParams p;
  const std::uint8_t kvl = r.byte();
  p.kv_seq_len = kvl < 150 ? 1 + std::int64_t(r.byte()) % std::max<std::int64_t>(1, d.Lk) : kvl < 200 ? d.Lk : kvl < 220 ? step(d.Lk, 1) : r.wild();
  p.scale = r.scale();
  const std::uint8_t mask = r.byte();
  p.mask = mask < 250 ? DecodeMask(mask % 3) : DecodeMask(mask);
  p.window = r.byte() < 240 ? r.byte() % 80 : r.wild();
  p.softcap = r.byte() < 200 ? 0.0f : r.scalar();
  const std::uint8_t nwg = r.byte();
  p.nwg = nwg < 240 ? 1 + nwg % 64 : int(std::int8_t(r.byte()));
  View q, k, v, out, o, s, m;
  make_view(q, r, fill, {d.B, d.H, 1, d.D}, DType::f32, false);
  make_view(k, r, fill, {d.B, d.Hkv, d.Lk, d.D}, dt, false);
  make_view(v, r, fill, {d.B, d.Hkv, d.Lk, d.D}, dt, false);
  make_view(out, r, fill, {d.B, d.H, 1, d.D}, DType::f32, true);
  // Now and then K and/or V quantized instead (one byte after the dense views).
  const std::uint8_t quant = r.byte();
  QView qk, qv;
  CacheView kc = k.t, vc = v.t;
  bool k_fits = k.fits(), v_fits = v.fits();
  if (quant >= 160 && (quant & 1)) {
    make_quant_view(qk, r, fill, {d.B, d.Hkv, d.Lk, d.D});
    kc = qk.t;
    k_fits = qk.fits();
  }
  if (quant >= 160 && (quant & 2)) {
    make_quant_view(qv, r, fill, {d.B, d.Hkv, d.Lk, d.D});
    vc = qv.t;
    v_fits = qv.fits();
  }
  const auto& qs = q.t.shape;
  bool safe = q.fits() && k_fits && v_fits && out.fits() && !saturating_work({qs[0], qs[1], kc.shape()[2], qs[3]}) &&
              !saturating_work({qs[0], qs[1], 64, qs[3] + 2});
  if (!split) {
    if (!safe) out.t.writable = false;
    expect(!safe, [&] { flash_attn_vec(q.t, kc, vc, out.t, p); });
    return;
  }
  const std::int64_t G = p.nwg;
  make_view(o, r, fill, {d.B, d.H, G, d.D}, DType::f32, true);
  make_view(s, r, fill, {d.B, d.H, G, 1}, DType::f32, true);
  make_view(m, r, fill, {d.B, d.H, G, 1}, DType::f32, true);
  safe = safe && o.fits() && s.fits() && m.fits();
  if (!safe) o.t.writable = s.t.writable = m.t.writable = out.t.writable = false;
  bool partials_ok = true;
  try {
    flash_attn_vec_partials(q.t, kc, vc, o.t, s.t, m.t, p);
  } catch (const InvalidArgument&) {
    partials_ok = false;
  }
  if (partials_ok && !safe) finding("partials with read-only outputs returned normally");
  // The reduce on whatever the partials hold (garbage included, when they failed).
  if (o.fits() && !saturating_work({o.t.shape[0], o.t.shape[1], 64, o.t.shape[3]})) {
    // Any nwg; the buffers were placed for the shapes make_view gave (which
    // may already differ from G), so only those shapes are known to fit.
    const auto o_placed = o.t.shape, s_placed = s.t.shape, m_placed = m.t.shape;
    if (r.flag()) s.t.shape[2] = m.t.shape[2] = o.t.shape[2] = r.extent();
    const bool fits_now = o.t.shape == o_placed && s.t.shape == s_placed && m.t.shape == m_placed;
    if (!fits_now || !safe) out.t.writable = false;
    expect(!fits_now || !safe, [&] { flash_attn_vec_reduce(o.t, s.t, m.t, out.t); });
  }
}

// Paged decode (issue 21): a pool of blocks [num_blocks, H_kv, block_size,
// D] (dense or quantized views as for fuzz_decode), a block table of int32
// entries from the reader (in range mostly, now and then negative or past
// the pool) and per-sequence lengths (now and then negative or longer than
// the table covers). Whatever the core accepts must read only the blocks the
// table names: ASan/UBSan watch; refusals are InvalidArgument.
void fuzz_paged(Reader& r, Filler& fill) {
  Dims d = read_dims(r);
  static const std::int64_t dims[] = {32, 64, 128, 256};
  d.D = dims[r.byte() % 4];
  const std::int64_t num_blocks = 1 + r.byte() % 9, block_size = 1 + r.byte() % 40, cols = 1 + r.byte() % 6;
  const DType dt = DType(r.byte() % 3);
  DecodeParams p;
  p.scale = r.scale();
  p.mask = DecodeMask(r.byte() % 3);
  p.window = r.byte() % 80;
  p.softcap = r.byte() < 200 ? 0.0f : r.scalar();
  p.nwg = 1 + r.byte() % 64;
  View q, k, v, out;
  make_view(q, r, fill, {d.B, d.H, 1, d.D}, DType::f32, false);
  make_view(k, r, fill, {num_blocks, d.Hkv, block_size, d.D}, dt, false);
  make_view(v, r, fill, {num_blocks, d.Hkv, block_size, d.D}, dt, false);
  make_view(out, r, fill, {d.B, d.H, 1, d.D}, DType::f32, true);
  QView qk;
  CacheView kc = k.t, vc = v.t;
  bool k_fits = k.fits();
  if (r.byte() >= 160) {
    make_quant_view(qk, r, fill, {num_blocks, d.Hkv, block_size, d.D});
    kc = qk.t;
    k_fits = qk.fits();
  }
  // Unlike a dense view, a table cannot be checked against its buffer:
  // it is built to fit, so only its values vary.
  const std::int64_t rows = std::max<std::int64_t>(1, std::min<std::int64_t>(q.t.shape[0], 64));
  std::vector<std::int32_t> table(static_cast<std::size_t>(rows * cols));
  for (auto& e : table) {
    const std::uint8_t t = r.byte();
    e = t < 230 ? std::int32_t(t % num_blocks) : t < 240 ? -1 - t % 3 : std::int32_t(num_blocks + t % 4);
  }
  std::vector<std::int64_t> lens(static_cast<std::size_t>(rows));
  for (auto& n : lens) {
    const std::uint8_t t = r.byte();
    n = t < 200 ? std::int64_t(t) % (cols * block_size + 1) : t < 230 ? cols * block_size + t % 3 : -std::int64_t(t % 4);
  }
  const BlockTableView tv{table.data(), rows, cols, cols};
  const auto& qs = q.t.shape;
  if (!(q.fits() && k_fits && v.fits() && out.fits()) || saturating_work({qs[0], qs[1], cols * block_size, qs[3]}) ||
      saturating_work({qs[0], qs[1], 64, qs[3] + 2}))
    return;  // views that do not fit their buffers are fuzz_decode's subject
  try {
    run(plan_flash_attn_vec_paged(q.t, kc, vc, tv, lens, p), out.t);
  } catch (const InvalidArgument&) {
  }
}

void fuzz_merge(Reader& r, Filler& fill) {
  const int n = r.byte() % 5;  // 0 = no inputs
  std::int64_t rows = 1 + r.byte() % 9, head_dim = 1 + r.byte() % 70;
  const std::uint8_t bad = r.byte();
  const bool wild = bad >= 230;
  if (wild) (r.flag() ? rows : head_dim) = r.wild();
  std::vector<std::vector<std::uint8_t>> outs(static_cast<std::size_t>(n)), lses(static_cast<std::size_t>(n));
  std::vector<const float*> op, lp;
  const bool sized = !wild || (rows >= 1 && head_dim >= 1 && !saturating_work({rows, head_dim}));
  const std::int64_t R = sized ? rows : 1, Dm = sized ? head_dim : 1;
  for (int i = 0; i < n; ++i) {
    outs[std::size_t(i)].resize(std::size_t(R * Dm * 4));
    lses[std::size_t(i)].resize(std::size_t(R * 4));
    fill.fill(outs[std::size_t(i)], DType::f32);
    fill.fill(lses[std::size_t(i)], DType::f32);
    op.push_back(reinterpret_cast<const float*>(outs[std::size_t(i)].data()));
    lp.push_back(reinterpret_cast<const float*>(lses[std::size_t(i)].data()));
  }
  if (n > 0 && r.byte() >= 245) lp.pop_back();
  if (n > 0 && r.byte() >= 250) op[0] = nullptr;
  std::vector<float> out(static_cast<std::size_t>(R * Dm)), lse(static_cast<std::size_t>(R));
  float* lse_ptr = r.flag() ? lse.data() : nullptr;
  // Raw pointers carry no size: unsized values are passed only when fattn
  // must reject them (an extent < 1, or rows * head_dim past 2^63 / 4).
  __int128 elements = __int128(rows) * head_dim;
  const bool must_reject = rows < 1 || head_dim < 1 || elements > kMax / 4;
  if (!sized && !must_reject) return;
  expect(!sized, [&] { merge_attention(op, lp, rows, head_dim, out.data(), lse_ptr); });
}

// Quantized caches: quantize_kv into a byte buffer placed for the view (any
// strides, overlapping rows included), then dequantize_kv of what it wrote,
// or of random bytes (inf and NaN scales included). Inputs are often made
// finite, and sometimes tiny (subnormal blocks, whose 1/d overflows), so the
// block arithmetic runs, not only the checks.
QuantFormat quant_format(Reader& r) {
  const std::uint8_t b = r.byte();
  if (b < 120) return QuantFormat::q8_0;
  if (b < 240) return QuantFormat::q4_0;
  return QuantFormat(b % 8);  // affine4, tq4 and unknown codes too
}

void place_quant(Operand& mem, QuantView& v, Reader& r, Filler& fill, const std::array<std::int64_t, 4>& shape,
                 QuantFormat f, bool writable) {
  std::int64_t row = 34;
  try {
    row = quant_row_bytes(f, shape[3]);
  } catch (const InvalidArgument&) {
  }
  const std::array<std::int64_t, 4> bytes_shape{shape[0], shape[1], shape[2], row};
  std::array<std::int64_t, 4> stride = strides_for(r, bytes_shape);
  stride[3] = 1;
  if (r.byte() >= 200) {  // padded rows
    auto mul = [](std::int64_t a, std::int64_t b) {
      std::int64_t c = 0;
      return __builtin_mul_overflow(a, b, &c) ? kMax : c;
    };
    const std::int64_t step = row > kMax - 64 ? kMax : row + r.byte() % 40;
    stride = {mul(mul(shape[1], shape[2]), step), mul(shape[2], step), step, 1};
  }
  v.data = place(mem, bytes_shape, stride, 1, fill, DType::f32);
  for (auto& b : mem.bytes) b = std::uint8_t(fill.next());
  if (r.byte() >= 253) v.data = nullptr;
  v.format = f;
  v.shape = shape;
  v.stride = {stride[0], stride[1], stride[2]};
  v.writable = writable && r.byte() < 250;
}

void fuzz_quant(Reader& r, Filler& fill) {
  static const std::int64_t dims[] = {32, 64, 96, 128, 256, 48, 16, 0};
  const std::int64_t B = r.extent(), H = r.extent(), L = r.extent();
  const std::int64_t D = r.byte() < 230 ? dims[r.byte() % 8] : r.extent();
  const QuantFormat f = quant_format(r);
  const DType dt = DType(r.byte() % 3);
  View x;
  make_view(x, r, fill, {B, H, L, D}, dt, false);
  if (x.fits() && r.byte() < 200) {  // finite values, sometimes scaled down to tiny ones
    const bool tiny = r.byte() >= 200;
    const std::int64_t esize = element_size(x.t.dtype);
    for (std::size_t i = 0; i + std::size_t(esize) <= x.mem.bytes.size(); i += std::size_t(esize)) {
      float v = 0.0f;
      if (esize == 4) {
        std::memcpy(&v, &x.mem.bytes[i], 4);
      } else {
        std::uint16_t h;
        std::memcpy(&h, &x.mem.bytes[i], 2);
        v = x.t.dtype == DType::bf16 ? bf16_to_f32(h) : f16_to_f32(h);
      }
      if (!std::isfinite(v) || std::fabs(v) > 1e5f) v = 1.5f;
      if (tiny) v = std::ldexp(v, -140);
      if (esize == 4) {
        std::memcpy(&x.mem.bytes[i], &v, 4);
      } else {
        const std::uint16_t h = x.t.dtype == DType::bf16 ? f32_to_bf16(v) : f32_to_f16(v);
        std::memcpy(&x.mem.bytes[i], &h, 2);
      }
    }
  }
  Operand out_mem;
  QuantView out;
  place_quant(out_mem, out, r, fill, x.t.shape, f, true);
  if (r.byte() >= 240) out.shape[r.byte() % 4] = r.extent();  // now and then one extent disagrees
  const bool safe = x.fits() && out_mem.fits && !saturating_work({B, H, L, D});
  if (!safe) out.writable = false;
  bool quantized = false;
  expect(!safe, [&] {
    quantize_kv(x.t, out);
    quantized = true;
  });
  // Dequantize: what was just written (every scale finite, so every value is),
  // or the random bytes of a fresh view.
  Operand in_mem;
  QuantView in = out;
  if (!quantized) place_quant(in_mem, in, r, fill, {B, H, L, D}, quant_format(r), false);
  const bool in_fits = quantized || in_mem.fits;
  View y;
  make_view(y, r, fill, {in.shape[0], in.shape[1], in.shape[2], in.shape[3]}, DType::f32, true);
  const bool dq_safe = in_fits && y.fits() && !saturating_work({in.shape[0], in.shape[1], in.shape[2], in.shape[3]});
  if (!dq_safe) y.t.writable = false;
  bool dequantized = false;
  expect(!dq_safe, [&] {
    dequantize_kv(in, y.t);
    dequantized = true;
  });
  if (quantized && dequantized && y.t.dtype == DType::f32)
    for (std::int64_t b = 0; b < y.t.shape[0]; ++b)
      for (std::int64_t h = 0; h < y.t.shape[1]; ++h)
        for (std::int64_t l = 0; l < y.t.shape[2]; ++l)
          for (std::int64_t d = 0; d < y.t.shape[3]; ++d)
            if (!std::isfinite(y.t.row<const float>(b, h, l)[d])) finding("a quantized value dequantized to inf/NaN");
  // The view helpers, with any values.
  std::uint8_t byte = 0;
  const std::array<std::int64_t, 4> wild_shape{r.wild(), r.wild(), r.wild(), r.wild()};
  const std::array<std::int64_t, 4> wild_stride{r.wild(), r.wild(), r.wild(), r.byte() < 200 ? 1 : r.wild()};
  expect(false, [&] { quant_view_over_bytes(&byte, quant_format(r), r.wild(), wild_shape, wild_stride, false, "b"); });
  expect(false, [&] { contiguous_quant_view(&byte, quant_format(r), wild_shape, false); });
  expect(false, [&] { quant_row_bytes(quant_format(r), r.wild()); });
}

// Functions that only look at their arguments: any values at all.
void fuzz_pure(Reader& r, Filler& fill) {
  const std::array<std::int64_t, 4> shape = {r.wild(), r.wild(), r.wild(), r.wild()};
  float x = 0;
  TensorView t;
  switch (r.byte() % 6) {
    case 0:
      expect(false, [&] { t = contiguous_view(&x, r.dtype(DType::f32), shape, r.flag()); });
      break;
    case 1:
      expect(false, [&] { t = seq_major_view(&x, r.dtype(DType::f32), shape, r.flag()); });
      break;
    default:
      t.data = r.flag() ? &x : nullptr;
      t.dtype = r.dtype(DType::f32);
      t.shape = shape;
      for (auto& s : t.stride) s = r.wild();
  }
  expect(false, [&] { validate_view(t, "t"); });
  MaskView m;
  m.data = &x;
  m.kind = MaskKind(r.byte() % 4);
  m.dtype = r.dtype(DType::f32);
  m.shape = shape;
  for (auto& s : m.stride) s = r.flag() ? 0 : r.wild();
  expect(false, [&] { validate_mask(m, {r.wild(), r.wild(), r.wild(), r.wild()}, "mask"); });
  std::optional<std::int64_t> qt, kt;
  if (r.flag()) qt = r.wild();
  if (r.flag()) kt = r.wild();
  expect(false, [&] { prefill_geometry(PrefillKernel(r.byte() % 4), r.wild(), qt, kt); });
  expect(false, [&] { dtype_size(r.dtype(DType::f32)); });
  std::vector<std::uint8_t> src(64), dst(64);
  fill.fill(src, DType::f32);
  const std::int64_t n = r.byte() < 240 ? std::int64_t(r.byte() % 17) : r.wild();
  const bool small = n >= 0 && n <= 16;
  const DType dt = r.dtype(DType::f16);
  if (small || n < 0) {
    expect(false, [&] { to_f32(dt, src.data(), reinterpret_cast<float*>(dst.data()), n); });
    expect(false, [&] { from_f32(dt, reinterpret_cast<const float*>(src.data()), dst.data(), n); });
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  Reader r{data, size};
  const std::uint8_t op = r.byte();
  const std::uint8_t env = r.byte();
  Filler fill{0x9e3779b97f4a7c15ull ^ (std::uint64_t(r.byte()) << 32 | r.byte())};
  // Thread count (1 or 2) and instruction set (any this CPU has, the
  // emulated AVX-512 code included) vary too.
  set_num_threads(1 + (env & 1));
  static const std::vector<std::string> isas = simd::available_isas(true);
  simd::set_active_isa(simd::isa_from_name(isas[(env >> 1) % isas.size()]));
  try {
    switch (op % 8) {
      case 0: fuzz_sdpa_or_prefill(r, fill, false); break;
      case 1: fuzz_sdpa_or_prefill(r, fill, true); break;
      case 2: fuzz_blk(r, fill); break;
      case 3: fuzz_decode(r, fill, false); break;
      case 4: fuzz_decode(r, fill, true); break;
      case 5: fuzz_merge(r, fill); break;
      case 6:  // the seeds of fuzz_pure start below 128
        if (op >= 128) fuzz_quant(r, fill);
        else fuzz_pure(r, fill);
        break;
      case 7:  // varlen below 128; paged from 128 to 191; the seeds of fuzz_pure for 7 are 192 and above
        if (op < 128) fuzz_varlen(r, fill);
        else if (op < 192) fuzz_paged(r, fill);
        else fuzz_pure(r, fill);
        break;
      default: fuzz_pure(r, fill); break;
    }
  } catch (const InvalidArgument&) {
    // fattn's own error from a setup call: fine.
  }
  return 0;
}
