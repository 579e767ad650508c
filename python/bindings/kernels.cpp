// The kernels' bindings. Each one: arrays -> views, plan (every check, no
// allocation), outputs allocated from the plan (or the caller's out=
// checked against it), copies the kernel cannot do without (stage), then
// the plan runs with the GIL released.
#include "kernels.hpp"

#include <pybind11/stl.h>

#include <cstring>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "views.hpp"

namespace fattn::bindings {
namespace {

std::vector<py::ssize_t> shape_of(const py::array& a) { return {a.shape(), a.shape() + a.ndim()}; }

// causal=True keeps the kernel's own alignment (unset); "top_left" or "bottom_right" chooses one.
void set_causal(bool causal, const std::optional<std::string>& align, bool& flag, CausalAlign& alignment) {
  flag = causal;
  if (align) alignment = *align == "bottom_right" ? CausalAlign::bottom_right : CausalAlign::top_left;
}

PrefillKernel kernel_of(const py::handle& name) {
  return choice(name, "kernel", {"auto", "candle", "llamacpp"}) == "llamacpp" ? PrefillKernel::llamacpp
                                                                              : PrefillKernel::candle;
}

py::object sdpa(const py::array& q, const py::array& k, const py::array& v, const py::object& out, bool causal,
                const std::optional<std::string>& causal_align, std::optional<float> scale,
                std::optional<std::int64_t> kv_seq_len, const std::optional<py::array>& sinks, float softcap,
                std::optional<std::int64_t> window) {
  Input qi = input4(q, "q", "[B, H, Lq, D]", false), ki = input4(k, "k", "[B, H_kv, capacity, D]", false),
        vi = input4(v, "v", "[B, H_kv, capacity, D]", false);
  SdpaParams params;
  set_causal(causal, causal_align, params.causal, params.causal_align);
  params.scale = scale;
  params.kv_seq_len = kv_seq_len;
  params.softcap = softcap;
  params.window = window;
  params.sinks = sinks_input(sinks, qi.view.shape[1]);
  SdpaPlan plan = plan_sdpa(qi.view, ki.view, vi.view, params);
  const Output o = output(out, shape_of(q), q.dtype(), {{"q", &q}, {"k", &k}, {"v", &v}});
  for (Input* in : {&qi, &ki, &vi}) in->stage();
  plan.q = qi.view, plan.k = ki.view, plan.v = vi.view;
  const TensorView ov = output_view(o.target, plan.out_dtype(), false);
  {
    py::gil_scoped_release nogil;
    run(plan, ov);
  }
  o.finish();
  return o.array;
}

py::object flash_attn_prefill(const py::array& q, const py::array& k, const py::array& v,
                              const std::optional<py::array>& mask, const std::optional<py::array>& blk,
                              const py::object& out, bool causal, const std::optional<std::string>& causal_align,
                              std::optional<float> scale,
                              const py::object& layout, const py::object& kernel, std::int64_t nsg,
                              std::optional<std::int64_t> q_tile, std::optional<std::int64_t> k_tile,
                              bool return_lse, bool verify_blk, float softcap, std::optional<std::int64_t> window,
                              const std::optional<py::array>& sinks, std::int64_t q_offset) {
  const bool blhd = choice(layout, "layout", {"bhld", "blhd"}) == "blhd";
  const char* axes = blhd ? "[B, L, H, D]" : "[B, H, L, D]";
  Input qi = input4(q, "q", axes, blhd), ki = input4(k, "k", axes, blhd), vi = input4(v, "v", axes, blhd);
  PrefillParams params;
  set_causal(causal, causal_align, params.causal, params.causal_align);
  params.scale = scale;
  params.kernel = kernel_of(kernel);
  params.nsg = nsg;
  params.q_tile = q_tile;
  params.k_tile = k_tile;
  params.verify_blk = verify_blk;
  params.softcap = softcap;
  params.window = window;
  params.sinks = sinks_input(sinks, qi.view.shape[1]);
  params.q_offset = q_offset;
  std::optional<MaskInput> mi;
  if (mask) {
    const auto& qs = qi.view.shape;
    mi = mask_input(*mask, {qs[0], qs[1], qs[2], ki.view.shape[2]});
  }
  py::array blk_storage;
  std::optional<BlkView> bv;
  if (blk) bv = blk_input(*blk, blk_storage);
  // A staged mask's values are read by the blk check: stage it first (a copy of an array the caller has).
  if (mi && bv && mi->staged) mi->stage();
  PrefillPlan plan = plan_flash_attn_prefill(qi.view, ki.view, vi.view, mi ? &mi->view : nullptr,
                                             bv ? &*bv : nullptr, params);
  const Output o = output(out, shape_of(q), q.dtype(),
                          mi ? std::initializer_list<std::pair<const char*, const py::array*>>{
                                   {"q", &q}, {"k", &k}, {"v", &v}, {"mask", &*mask}}
                             : std::initializer_list<std::pair<const char*, const py::array*>>{
                                   {"q", &q}, {"k", &k}, {"v", &v}});
  for (Input* in : {&qi, &ki, &vi}) in->stage();
  plan.q = qi.view, plan.k = ki.view, plan.v = vi.view;
  if (mi) {
    mi->stage();
    plan.mask->data = mi->view.data;
  }
  const TensorView ov = output_view(o.target, plan.out_dtype(), blhd);
  py::array lse;
  TensorView lv;
  if (return_lse) {
    const auto s = plan.lse_shape();
    lse = py::array(py::dtype("float32"), std::vector<py::ssize_t>{s[0], s[1], s[2]});
    lv = contiguous_view(lse.mutable_data(), DType::f32, s, true);
  }
  {
    py::gil_scoped_release nogil;
    run(plan, ov, return_lse ? &lv : nullptr);
  }
  o.finish();
  if (return_lse) return py::make_tuple(o.array, lse);
  return o.array;
}

// cu_seqlens as the core takes them: a 1-D integer array (int32 or int64, any
// stride) copied out as int64. Its values are the core's to check.
std::vector<std::int64_t> cu_seqlens_input(const py::array& a, const char* name) {
  const py::dtype dt = a.dtype();
  require_dtype(dt.kind() == 'i' && (dt.itemsize() == 4 || dt.itemsize() == 8), name,
                ": dtype must be int32 or int64, got ", std::string(py::str(dt.attr("name"))));
  require(a.ndim() == 1, name, ": expected a 1-D array [B + 1], got shape ", py_shape(a));
  std::vector<std::int64_t> values(std::size_t(a.shape(0)));
  const auto* base = static_cast<const char*>(a.data());
  for (py::ssize_t i = 0; i < a.shape(0); ++i) {
    const char* at = base + i * a.strides(0);
    if (dt.itemsize() == 4) {
      std::int32_t x = 0;
      std::memcpy(&x, at, 4);
      values[std::size_t(i)] = x;
    } else {
      std::memcpy(&values[std::size_t(i)], at, 8);
    }
  }
  return values;
}

// A packed [total, H, D] array, read as [1, H, total, D].
Input packed_input(const py::array& a, const char* name, const char* axes) {
  require(a.ndim() == 3, name, ": expected a 3-D array ", axes, ", got shape ", py_shape(a));
  return input_as4(a, name, {-1, 1, 0, 2}, dtype_of(a, name));
}

py::object flash_attn_varlen(const py::array& q, const py::array& k, const py::array& v, const py::array& cu_seqlens_q,
                             const py::array& cu_seqlens_k, const py::object& out, bool causal,
                             const std::optional<std::string>& causal_align, std::optional<float> scale,
                             float softcap, std::optional<std::int64_t> window, const std::optional<py::array>& sinks,
                             const py::object& kernel, bool return_lse) {
  Input qi = packed_input(q, "q", "[total_q, H, D]"), ki = packed_input(k, "k", "[total_k, H_kv, D]"),
        vi = packed_input(v, "v", "[total_k, H_kv, D]");
  const std::vector<std::int64_t> cu_q = cu_seqlens_input(cu_seqlens_q, "cu_seqlens_q"),
                                  cu_k = cu_seqlens_input(cu_seqlens_k, "cu_seqlens_k");
  VarlenPrefillParams params;  // causal=True: bottom-right per sequence, flash-attention's varlen
  set_causal(causal, causal_align, params.causal, params.causal_align);
  params.scale = scale;
  params.kernel = kernel_of(kernel);
  params.softcap = softcap;
  params.window = window;
  params.sinks = sinks_input(sinks, qi.view.shape[1]);
  VarlenPrefillPlan plan = plan_flash_attn_varlen(qi.view, ki.view, vi.view, cu_q.data(), std::int64_t(cu_q.size()),
                                                  cu_k.data(), std::int64_t(cu_k.size()), params);
  const Output o = output(out, shape_of(q), q.dtype(), {{"q", &q}, {"k", &k}, {"v", &v}});
  for (Input* in : {&qi, &ki, &vi}) in->stage();
  plan.shared.q = qi.view, plan.shared.k = ki.view, plan.shared.v = vi.view;
  const TensorView ov = output_view_as4(o.target, plan.out_dtype(), {-1, 1, 0, 2});
  py::array lse;
  TensorView lv;
  if (return_lse) {
    lse = py::array(py::dtype("float32"), std::vector<py::ssize_t>{plan.shared.q_len, plan.shared.heads});
    lv = output_view_as4(lse, DType::f32, {-1, 1, 0, -1});
  }
  {
    py::gil_scoped_release nogil;
    run(plan, ov, return_lse ? &lv : nullptr);
  }
  o.finish();
  if (return_lse) return py::make_tuple(o.array, lse);
  return o.array;
}

PrefillGeometry geometry_of(const py::object& kernel, std::optional<std::int64_t> head_dim,
                            std::optional<std::int64_t> q_tile, std::optional<std::int64_t> k_tile) {
  const PrefillKernel kern = kernel_of(kernel);
  if (!head_dim && (!q_tile || !k_tile)) {
    require(kern == PrefillKernel::llamacpp,
            "head_dim: needed to choose the tile geometry (or give both q_tile and k_tile)");
    head_dim = 512;
  }
  return prefill_geometry(kern, head_dim.value_or(512), q_tile, k_tile);
}

py::array flash_attn_prefill_blk(const py::array& mask, const py::object& kernel, std::optional<std::int64_t> head_dim,
                                 std::optional<std::int64_t> q_tile, std::optional<std::int64_t> k_tile) {
  const PrefillGeometry geometry = geometry_of(kernel, head_dim, q_tile, k_tile);
  require(mask.ndim() == 2 || mask.ndim() == 4, "mask: expected [Lq, Lk] or [B, H, Lq, Lk], got shape ",
          py_shape(mask));
  std::array<std::int64_t, 4> own{1, 1, 1, 1};
  for (py::ssize_t i = 0; i < mask.ndim(); ++i) own[std::size_t(4 - mask.ndim() + i)] = mask.shape(i);
  MaskInput mi = mask_input(mask, own);
  const PrefillBlkPlan plan = plan_flash_attn_prefill_blk(mi.view, kernel_of(kernel), geometry);
  mi.stage();
  PrefillBlkPlan staged = plan;
  staged.mask.data = mi.view.data;
  py::array_t<std::uint8_t> out(std::vector<py::ssize_t>{plan.rows, plan.cols});
  std::uint8_t* dst = out.mutable_data();
  {
    py::gil_scoped_release nogil;
    run(staged, dst);
  }
  return std::move(out);
}

// Decode arrays: q [H, D] or [B, H, D]; caches one rank more. The map from
// the caller's axes to [B, H, L, D].
// A decode cache argument: a dense array (Input), or a quantized cache: its
// blocks (uint8 [..., capacity, bytes per row], the rows' bytes read in
// place), its format and D, given as `quant` = (format, D).
using QuantArg = std::optional<std::pair<std::string, std::int64_t>>;

struct CacheInput {
  Input dense;
  std::optional<QuantView> quant;
  py::array blocks;
  const char* name = "";
  bool staged = false;  // blocks whose last axis is not contiguous: copied once planned
  CacheView view() const { return quant ? CacheView(*quant) : CacheView(dense.view); }
  void stage() {
    if (!quant) return dense.stage();
    if (!staged) return;
    blocks = py::module_::import("numpy").attr("ascontiguousarray")(blocks);
    quant->data = const_cast<void*>(blocks.data());
  }
  // The blocks' last extent against the format's row (what only the binding
  // sees: the core's view has the logical D), once the plan has checked the
  // format and D.
  void check_row_bytes() const {
    if (!quant) return;
    const std::int64_t want = quant_row_bytes(quant->format, quant->head_dim());
    const std::int64_t got = blocks.shape(blocks.ndim() - 1);
    require(got == want, name, ": a ", quant_format_name(quant->format), " row of D = ", quant->head_dim(),
            " elements is ", want, " bytes, got blocks of ", got, " bytes per row (shape ", py_shape(blocks), ")");
  }
};

CacheInput cache_input(const py::array& a, const QuantArg& quant, const char* name, const std::vector<int>& axes) {
  CacheInput in;
  in.name = name;
  if (!quant) {
    in.dense = input_as4(a, name, axes, dtype_of(a, name));
    return in;
  }
  const py::dtype dt = a.dtype();
  require_dtype(dt.kind() == 'u' && dt.itemsize() == 1, name, ": a quantized cache's blocks must be uint8, got ",
                std::string(py::str(dt.attr("name"))));
  in.blocks = a;
  QuantView t;
  t.data = const_cast<void*>(a.data());
  t.format = quant_format_of(py::str(quant->first), name);
  const py::ssize_t last = a.ndim() - 1;
  in.staged = a.shape(last) > 1 && a.strides(last) != 1;
  // Strides in bytes of [B, H_kv, capacity] (the C-contiguous copy's when staged).
  std::array<std::int64_t, 4> dense{};
  dense[std::size_t(last)] = 1;
  for (py::ssize_t i = last - 1; i >= 0; --i) dense[std::size_t(i)] = dense[std::size_t(i + 1)] * a.shape(i + 1);
  for (int i = 0; i < 3; ++i) {
    const int src = axes[std::size_t(i)];
    t.shape[std::size_t(i)] = src < 0 ? 1 : std::int64_t(a.shape(src));
    t.stride[std::size_t(i)] = src < 0 ? 0 : in.staged ? dense[std::size_t(src)] : std::int64_t(a.strides(src));
  }
  t.shape[3] = quant->second;
  in.quant = t;
  return in;
}

struct DecodeInputs {
  Input q;
  CacheInput k, v;
  bool batched;
  void check_row_bytes() const {
    k.check_row_bytes();
    v.check_row_bytes();
  }
};

DecodeInputs decode_inputs(const py::array& q, const py::array& k, const py::array& v, const QuantArg& k_quant,
                           const QuantArg& v_quant) {
  require(q.ndim() == 2 || q.ndim() == 3, "q: expected [H, D] or [B, H, D], got shape ", py_shape(q));
  const bool batched = q.ndim() == 3;
  for (const auto& [name, a, quant] : {std::tuple<const char*, const py::array*, bool>{"k_cache", &k, bool(k_quant)},
                                       {"v_cache", &v, bool(v_quant)}})
    require(a->ndim() == q.ndim() + 1, name, ": expected ",
            quant ? (batched ? "blocks [B, H_kv, capacity, bytes per row]" : "blocks [H_kv, capacity, bytes per row]")
                  : (batched ? "[B, H_kv, capacity, D]" : "[H_kv, capacity, D]"),
            " to go with q of shape ", py_shape(q), ", got shape ", py_shape(*a));
  const py::dtype qt = q.dtype();
  const std::string q_name = py::str(qt.attr("name"));
  require_dtype((qt.kind() == 'f' && (qt.itemsize() == 4 || qt.itemsize() == 2)) || q_name == "bfloat16",
                "q: dtype must be float32, float16 or bfloat16 (the seed stages it to float16 itself), got ", q_name);
  const std::vector<int> q_axes = batched ? std::vector<int>{0, 1, -1, 2} : std::vector<int>{-1, 0, -1, 1};
  const std::vector<int> c_axes = batched ? std::vector<int>{0, 1, 2, 3} : std::vector<int>{-1, 0, 1, 2};
  // q is widened to f32 (exactly) when staged: only after the plan accepted the call.
  Input qi = input_as4(q, "q", q_axes, DType::f32);
  CacheInput ki = cache_input(k, k_quant, "k_cache", c_axes);
  CacheInput vi = cache_input(v, v_quant, "v_cache", c_axes);
  return {qi, ki, vi, batched};
}

DecodeParams decode_params(const py::array& q, std::int64_t kv_seq_len, std::optional<float> scale,
                           const py::object& mask, std::int64_t window, float softcap, std::int64_t nwg,
                           const std::optional<py::array>& sinks, std::optional<std::int64_t> ring_start) {
  const std::string m = choice(mask, "mask", {"none", "causal", "sliding_window"});
  DecodeParams p;
  p.kv_seq_len = kv_seq_len;
  p.scale = scale;
  p.mask = m == "causal" ? DecodeMask::causal : m == "sliding_window" ? DecodeMask::sliding_window : DecodeMask::none;
  p.window = window;
  p.softcap = softcap;
  p.nwg = nwg;
  p.sinks = sinks_input(sinks, q.ndim() >= 2 ? q.shape(q.ndim() - 2) : 0);
  p.ring_start = ring_start;
  return p;
}

// The two decode bindings' first steps: the parameters and inputs as views,
// the plan (every check, nothing allocated), then the blocks' row width.
struct PlannedDecode {
  DecodeInputs in;
  DecodePlan plan;
};
PlannedDecode plan_decode(const py::array& q, const py::array& k, const py::array& v, std::int64_t kv_seq_len,
                          std::optional<float> scale, const py::object& mask, std::int64_t window, float softcap,
                          std::int64_t nwg, const std::optional<py::array>& sinks,
                          std::optional<std::int64_t> ring_start, const QuantArg& k_quant, const QuantArg& v_quant) {
  const DecodeParams params = decode_params(q, kv_seq_len, scale, mask, window, softcap, nwg, sinks, ring_start);
  DecodeInputs in = decode_inputs(q, k, v, k_quant, v_quant);
  DecodePlan plan = plan_flash_attn_vec(in.q.view, in.k.view(), in.v.view(), params);
  in.check_row_bytes();
  return {std::move(in), std::move(plan)};
}

void stage(DecodeInputs& in, DecodePlan& plan) {
  in.q.stage();
  in.k.stage();
  in.v.stage();
  plan.q = in.q.view, plan.k = in.k.view(), plan.v = in.v.view();
}

py::object flash_attn_vec(const py::array& q, const py::array& k, const py::array& v, const py::object& out,
                          std::int64_t kv_seq_len, std::optional<float> scale, const py::object& mask,
                          std::int64_t window, float softcap, std::int64_t nwg,
                          const std::optional<py::array>& sinks, std::optional<std::int64_t> ring_start,
                          const QuantArg& k_quant, const QuantArg& v_quant) {
  auto [in, plan] = plan_decode(q, k, v, kv_seq_len, scale, mask, window, softcap, nwg, sinks, ring_start, k_quant,
                                v_quant);
  const Output o = output(out, shape_of(q), py::dtype("float32"), {{"q", &q}, {"k_cache", &k}, {"v_cache", &v}});
  stage(in, plan);
  const TensorView ov = output_view_as4(o.target, DType::f32,
                                        in.batched ? std::vector<int>{0, 1, -1, 2} : std::vector<int>{-1, 0, -1, 1});
  {
    py::gil_scoped_release nogil;
    run(plan, ov);
  }
  o.finish();
  return o.array;
}

py::tuple flash_attn_vec_partials(const py::array& q, const py::array& k, const py::array& v,
                                  std::int64_t kv_seq_len, std::optional<float> scale, const py::object& mask,
                                  std::int64_t window, float softcap, std::int64_t nwg,
                                  const std::optional<py::array>& sinks, std::optional<std::int64_t> ring_start,
                                  const QuantArg& k_quant, const QuantArg& v_quant) {
  auto [in, plan] = plan_decode(q, k, v, kv_seq_len, scale, mask, window, softcap, nwg, sinks, ring_start, k_quant,
                                v_quant);
  std::vector<py::ssize_t> lead(q.shape(), q.shape() + q.ndim() - 1), o_shape = lead, sm_shape = lead;
  o_shape.insert(o_shape.end(), {py::ssize_t(plan.nwg), py::ssize_t(plan.head_dim)});
  sm_shape.push_back(py::ssize_t(plan.nwg));
  const py::dtype f32("float32");
  py::array o(f32, o_shape), s(f32, sm_shape), m(f32, sm_shape);
  stage(in, plan);
  const std::vector<int> o_axes = in.batched ? std::vector<int>{0, 1, 2, 3} : std::vector<int>{-1, 0, 1, 2};
  const std::vector<int> sm_axes = in.batched ? std::vector<int>{0, 1, 2, -1} : std::vector<int>{-1, 0, 1, -1};
  const TensorView ov = output_view_as4(o, DType::f32, o_axes), sv = output_view_as4(s, DType::f32, sm_axes),
                   mv = output_view_as4(m, DType::f32, sm_axes);
  {
    py::gil_scoped_release nogil;
    run_partials(plan, ov, sv, mv);
  }
  return py::make_tuple(o, s, m);
}

// Paged decode (issue 21): q [B, H, D]; k, v pools [num_blocks, block_size,
// H_kv, D] (or their blocks [num_blocks, block_size, H_kv, bytes per row]);
// kv_seq_lens int64 [B]; block_table int32 [B, max_blocks] (the front turns
// other integer tables into int32).
struct PlannedPagedDecode {
  DecodeInputs in;
  py::array table;  // kept alive: the plan points into it
  PagedDecodePlan plan;
};
PlannedPagedDecode plan_paged(const py::array& q, const py::array& k, const py::array& v, const py::array& kv_seq_lens,
                              const py::array& block_table, std::optional<float> scale, const py::object& mask,
                              std::int64_t window, float softcap, std::int64_t nwg,
                              const std::optional<py::array>& sinks, std::optional<std::int64_t> ring_start,
                              const QuantArg& k_quant, const QuantArg& v_quant) {
  require(q.ndim() == 3, "q: expected [B, H, D] with block_table, got shape ", py_shape(q));
  for (const auto& [name, a, quant] : {std::tuple<const char*, const py::array*, bool>{"k_cache", &k, bool(k_quant)},
                                       {"v_cache", &v, bool(v_quant)}})
    require(a->ndim() == 4, name, ": expected ",
            quant ? "blocks [num_blocks, block_size, H_kv, bytes per row]" : "[num_blocks, block_size, H_kv, D]",
            " with block_table, got shape ", py_shape(*a));
  const py::dtype lt = kv_seq_lens.dtype();
  require_dtype(lt.kind() == 'i' && lt.itemsize() == 8, "kv_seq_len: expected int64 lengths, got ",
                std::string(py::str(lt.attr("name"))));
  require(kv_seq_lens.ndim() == 1, "kv_seq_len: expected one length per sequence, shape [B], got shape ",
          py_shape(kv_seq_lens));
  const py::dtype tt = block_table.dtype();
  require_dtype(tt.kind() == 'i' && tt.itemsize() == 4, "block_table: dtype must be int32, got ",
                std::string(py::str(tt.attr("name"))));
  require(block_table.ndim() == 2, "block_table: expected [B, max_blocks], got shape ", py_shape(block_table));
  const py::array table = py::module_::import("numpy").attr("ascontiguousarray")(block_table);
  std::vector<std::int64_t> lens(std::size_t(kv_seq_lens.shape(0)));
  for (std::size_t i = 0; i < lens.size(); ++i)
    lens[i] = *static_cast<const std::int64_t*>(kv_seq_lens.data(py::ssize_t(i)));
  DecodeParams params = decode_params(q, 1, scale, mask, window, softcap, nwg, sinks, ring_start);
  const py::dtype qt = q.dtype();
  const std::string q_name = py::str(qt.attr("name"));
  require_dtype((qt.kind() == 'f' && (qt.itemsize() == 4 || qt.itemsize() == 2)) || q_name == "bfloat16",
                "q: dtype must be float32, float16 or bfloat16 (the seed stages it to float16 itself), got ", q_name);
  DecodeInputs in{input_as4(q, "q", {0, 1, -1, 2}, DType::f32), cache_input(k, k_quant, "k_cache", {0, 2, 1, 3}),
                  cache_input(v, v_quant, "v_cache", {0, 2, 1, 3}), true};
  const BlockTableView tv{static_cast<const std::int32_t*>(table.data()), std::int64_t(table.shape(0)),
                          std::int64_t(table.shape(1)), std::int64_t(table.shape(1))};
  PagedDecodePlan plan = plan_flash_attn_vec_paged(in.q.view, in.k.view(), in.v.view(), tv, lens, params);
  in.check_row_bytes();
  return {std::move(in), table, std::move(plan)};
}

// The staged views into every sequence's plan (the pages stay the plan's).
void stage(DecodeInputs& in, PagedDecodePlan& plan) {
  in.q.stage();
  in.k.stage();
  in.v.stage();
  for (std::int64_t b = 0; b < plan.batch; ++b) {
    DecodePlan& seq = plan.sequences[std::size_t(b)];
    const CacheView k = in.k.view(), v = in.v.view();
    const std::int32_t* pages = seq.k.pages;
    const std::int64_t page_size = seq.k.page_size;
    seq.k = k;
    seq.v = v;
    seq.k.pages = seq.v.pages = pages;
    seq.k.page_size = seq.v.page_size = page_size;
    seq.q = in.q.view;
    seq.q.data = static_cast<float*>(in.q.view.data) + b * in.q.view.stride[0];
    seq.q.shape[0] = 1;
  }
}

py::object flash_attn_vec_paged(const py::array& q, const py::array& k, const py::array& v, const py::object& out,
                                const py::array& kv_seq_lens, const py::array& block_table,
                                std::optional<float> scale, const py::object& mask, std::int64_t window,
                                float softcap, std::int64_t nwg, const std::optional<py::array>& sinks,
                                std::optional<std::int64_t> ring_start, const QuantArg& k_quant,
                                const QuantArg& v_quant) {
  auto [in, table, plan] = plan_paged(q, k, v, kv_seq_lens, block_table, scale, mask, window, softcap, nwg, sinks,
                                      ring_start, k_quant, v_quant);
  const Output o = output(out, shape_of(q), py::dtype("float32"), {{"q", &q}, {"k_cache", &k}, {"v_cache", &v}});
  stage(in, plan);
  const TensorView ov = output_view_as4(o.target, DType::f32, {0, 1, -1, 2});
  {
    py::gil_scoped_release nogil;
    run(plan, ov);
  }
  o.finish();
  return o.array;
}

py::tuple flash_attn_vec_partials_paged(const py::array& q, const py::array& k, const py::array& v,
                                        const py::array& kv_seq_lens, const py::array& block_table,
                                        std::optional<float> scale, const py::object& mask, std::int64_t window,
                                        float softcap, std::int64_t nwg, const std::optional<py::array>& sinks,
                                        std::optional<std::int64_t> ring_start, const QuantArg& k_quant,
                                        const QuantArg& v_quant) {
  auto [in, table, plan] = plan_paged(q, k, v, kv_seq_lens, block_table, scale, mask, window, softcap, nwg, sinks,
                                      ring_start, k_quant, v_quant);
  const py::dtype f32("float32");
  const py::ssize_t B = q.shape(0), H = q.shape(1);
  py::array o(f32, std::vector<py::ssize_t>{B, H, py::ssize_t(plan.nwg), py::ssize_t(plan.head_dim)});
  py::array s(f32, std::vector<py::ssize_t>{B, H, py::ssize_t(plan.nwg)});
  py::array m(f32, std::vector<py::ssize_t>{B, H, py::ssize_t(plan.nwg)});
  stage(in, plan);
  const TensorView ov = output_view_as4(o, DType::f32, {0, 1, 2, 3}), sv = output_view_as4(s, DType::f32, {0, 1, 2, -1}),
                   mv = output_view_as4(m, DType::f32, {0, 1, 2, -1});
  {
    py::gil_scoped_release nogil;
    run_partials(plan, ov, sv, mv);
  }
  return py::make_tuple(o, s, m);
}

py::object flash_attn_vec_reduce(const py::array& o, const py::array& s, const py::array& m, const py::object& out) {
  for (const auto& [name, a] : {std::pair<const char*, const py::array*>{"o", &o}, {"s", &s}, {"m", &m}})
    require_dtype(a->dtype().kind() == 'f' && a->itemsize() == 4, name, ": dtype must be float32, got ",
                  std::string(py::str(a->dtype().attr("name"))));
  require(o.ndim() == 3 || o.ndim() == 4, "o: expected [H, nwg, D] or [B, H, nwg, D], got shape ", py_shape(o));
  const std::vector<py::ssize_t> want(o.shape(), o.shape() + o.ndim() - 1);
  for (const auto& [name, a] : {std::pair<const char*, const py::array*>{"s", &s}, {"m", &m}}) {
    const std::vector<py::ssize_t> got = shape_of(*a);
    if (got != want) {
      std::string w = "(";
      for (std::size_t i = 0; i < want.size(); ++i) w += (i ? ", " : "") + std::to_string(want[i]);
      throw InvalidArgument(detail::concat(name, ": shape must be o's without D, ", w, want.size() == 1 ? ",)" : ")",
                                           ", got ", py_shape(*a)));
    }
  }
  const bool batched = o.ndim() == 4;
  const std::vector<int> o_axes = batched ? std::vector<int>{0, 1, 2, 3} : std::vector<int>{-1, 0, 1, 2};
  const std::vector<int> sm_axes = batched ? std::vector<int>{0, 1, 2, -1} : std::vector<int>{-1, 0, 1, -1};
  Input oi = input_as4(o, "o", o_axes, DType::f32), si = input_as4(s, "s", sm_axes, DType::f32),
        mi = input_as4(m, "m", sm_axes, DType::f32);
  ReducePlan plan = plan_flash_attn_vec_reduce(oi.view, si.view, mi.view);
  std::vector<py::ssize_t> out_shape(o.shape(), o.shape() + o.ndim() - 2);
  out_shape.push_back(o.shape(o.ndim() - 1));
  const Output res = output(out, out_shape, py::dtype("float32"), {{"o", &o}, {"s", &s}, {"m", &m}});
  for (Input* in : {&oi, &si, &mi}) in->stage();
  plan.o = oi.view, plan.s = si.view, plan.m = mi.view;
  const TensorView ov = output_view_as4(res.target, DType::f32,
                                        batched ? std::vector<int>{0, 1, -1, 2} : std::vector<int>{-1, 0, -1, 1});
  {
    py::gil_scoped_release nogil;
    run(plan, ov);
  }
  res.finish();
  return res.array;
}

}  // namespace

void register_kernels(py::module_& m) {
  m.def("sdpa", &sdpa, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("out"), py::arg("causal"),
        py::arg("causal_align"), py::arg("scale"), py::arg("kv_seq_len"), py::arg("sinks"), py::arg("softcap"),
        py::arg("window"));
  m.def("flash_attn_prefill", &flash_attn_prefill, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("mask"),
        py::arg("blk"), py::arg("out"), py::arg("causal"), py::arg("causal_align"), py::arg("scale"), py::arg("layout"), py::arg("kernel"),
        py::arg("nsg"), py::arg("q_tile"), py::arg("k_tile"), py::arg("return_lse"), py::arg("verify_blk"),
        py::arg("softcap"), py::arg("window"), py::arg("sinks"), py::arg("q_offset"));
  m.def("flash_attn_varlen", &flash_attn_varlen, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("cu_seqlens_q"),
        py::arg("cu_seqlens_k"), py::arg("out"), py::arg("causal"), py::arg("causal_align"), py::arg("scale"),
        py::arg("softcap"), py::arg("window"), py::arg("sinks"), py::arg("kernel"), py::arg("return_lse"));
  m.def(
      "prefill_geometry",
      [](const py::object& kernel, std::optional<std::int64_t> head_dim, std::optional<std::int64_t> q_tile,
         std::optional<std::int64_t> k_tile) {
        const PrefillGeometry g = geometry_of(kernel, head_dim, q_tile, k_tile);
        return py::make_tuple(g.q_tile, g.k_tile);
      },
      py::arg("kernel"), py::arg("head_dim"), py::arg("q_tile"), py::arg("k_tile"));
  m.def("flash_attn_prefill_blk", &flash_attn_prefill_blk, py::arg("mask"), py::arg("kernel"), py::arg("head_dim"),
        py::arg("q_tile"), py::arg("k_tile"));
  m.def("flash_attn_vec", &flash_attn_vec, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("out"),
        py::arg("kv_seq_len"), py::arg("scale"), py::arg("mask"), py::arg("window"), py::arg("softcap"),
        py::arg("nwg"), py::arg("sinks"), py::arg("ring_start"), py::arg("k_quant") = py::none(),
        py::arg("v_quant") = py::none());
  m.def("flash_attn_vec_partials", &flash_attn_vec_partials, py::arg("q"), py::arg("k"), py::arg("v"),
        py::arg("kv_seq_len"), py::arg("scale"), py::arg("mask"), py::arg("window"), py::arg("softcap"),
        py::arg("nwg"), py::arg("sinks"), py::arg("ring_start"), py::arg("k_quant") = py::none(),
        py::arg("v_quant") = py::none());
  m.def("flash_attn_vec_paged", &flash_attn_vec_paged, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("out"),
        py::arg("kv_seq_lens"), py::arg("block_table"), py::arg("scale"), py::arg("mask"), py::arg("window"),
        py::arg("softcap"), py::arg("nwg"), py::arg("sinks"), py::arg("ring_start"), py::arg("k_quant") = py::none(),
        py::arg("v_quant") = py::none());
  m.def("flash_attn_vec_partials_paged", &flash_attn_vec_partials_paged, py::arg("q"), py::arg("k"), py::arg("v"),
        py::arg("kv_seq_lens"), py::arg("block_table"), py::arg("scale"), py::arg("mask"), py::arg("window"),
        py::arg("softcap"), py::arg("nwg"), py::arg("sinks"), py::arg("ring_start"), py::arg("k_quant") = py::none(),
        py::arg("v_quant") = py::none());
  m.def("flash_attn_vec_reduce", &flash_attn_vec_reduce, py::arg("o"), py::arg("s"), py::arg("m"), py::arg("out"));
}

}  // namespace fattn::bindings
