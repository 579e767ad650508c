#pragma once
// Sets MXCSR's flush-to-zero and denormals-are-zero bits for one scope and
// puts the caller's MXCSR back when it ends. Inside it a plain FMA computes
// what one step of VDPBF16PS computes (numerics/bf16_dot.hpp: DAZ inputs,
// FTZ with x86's tininess rule; tests_cpp/test_bf16_dot.cpp holds the two
// together), which is how the FMA paths and the emulated twin of the
// AVX512_BF16 path sum a bf16 Q·Kᵀ. Only that sum runs inside: every other
// step of a kernel keeps IEEE denormals.
//
// The compiler does not know that MXCSR changes what an FMA computes, so
// each write is an asm statement with a memory clobber: no load or store
// moves across it, and code whose operands come from loads and whose
// results go to stores (the score sums) stays inside. x86-64 only.
namespace fattn::simd {

class FtzDazScope {
 public:
  static constexpr unsigned kFtz = 0x8000u, kDaz = 0x0040u;
  FtzDazScope() {
    asm volatile("stmxcsr %0" : "=m"(saved_) : : "memory");
    const unsigned flushed = saved_ | kFtz | kDaz;
    asm volatile("ldmxcsr %0" : : "m"(flushed) : "memory");
  }
  ~FtzDazScope() { asm volatile("ldmxcsr %0" : : "m"(saved_) : "memory"); }
  FtzDazScope(const FtzDazScope&) = delete;
  FtzDazScope& operator=(const FtzDazScope&) = delete;

 private:
  unsigned saved_ = 0;
};

}  // namespace fattn::simd
